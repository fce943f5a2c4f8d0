#!/usr/bin/env python
"""Convert a folder of DICOM series (searched recursively) to NIfTI, one file per series.

Example:
    python data_scripts/dicom_to_nifti.py ../shared/data/dicom_mr/Study1 --out outputs/study1_nifti

Thin wrapper over :func:`kmunet.data.prepare.convert_dicom_folder` (SimpleITK ImageSeriesReader).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and convert; returns the exit code (1 on errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="folder holding DICOM series (any depth)")
    parser.add_argument("--out", required=True, help="output folder for the .nii.gz files")
    args = parser.parse_args(argv)

    from kmunet.data.prepare import convert_dicom_folder

    try:
        files = convert_dicom_folder(args.source, args.out)
    except (ValueError, OSError) as err:
        print(f"dicom_to_nifti: error: {err}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
