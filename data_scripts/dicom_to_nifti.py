#!/usr/bin/env python
"""Convert a folder of DICOM series (searched recursively) to NIfTI, one file per series.

Example:
    python data_scripts/dicom_to_nifti.py ../shared/data/dicom_mr/Study1 --out outputs/study1_nifti

Each series is written as ``<relative folder path joined with _>[_<k>].nii.gz``. When two series
get the same name (``p1/ax`` and ``p1_ax``), the one whose folder sorts first keeps it and the
others get ``-2``, ``-3``, ... (a note on stderr says which). Existing files are kept (an error)
unless ``--overwrite``. Nothing is written unless every series converts. Thin wrapper over
:func:`kmunet.data.prepare.convert_dicom_folder` (SimpleITK ImageSeriesReader).
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)

    from kmunet.data.prepare import convert_dicom_folder

    def note(message: str) -> None:
        print(f"dicom_to_nifti: note: {message}", file=sys.stderr)

    try:
        files = convert_dicom_folder(args.source, args.out, overwrite=args.overwrite, log=note)
    except (ValueError, OSError) as err:
        print(f"dicom_to_nifti: error: {err}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
