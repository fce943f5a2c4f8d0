#!/usr/bin/env python
"""Verify a DRIVE training folder, or unpack a DRIVE zip / reorganise a flat folder, then verify.

Examples:
    python data_scripts/prepare_drive.py ../shared/data/drive/training
    python data_scripts/prepare_drive.py ~/Downloads/DRIVE.zip --out data/drive

The result holds ``images/NN_training.tif``, ``1st_manual/NN_manual1.gif`` and
``mask/NN_training_mask.gif`` (the layout ``data.layout: drive`` expects). Thin wrapper over
:func:`kmunet.data.prepare.prepare_drive`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and prepare the DRIVE folder; returns the exit code (1 on errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="DRIVE folder, flat folder of DRIVE files, or DRIVE zip")
    parser.add_argument("--out", default=None, help="output folder (needed for a zip or a flat folder)")
    args = parser.parse_args(argv)

    from kmunet.data.prepare import prepare_drive

    try:
        folder = prepare_drive(args.source, args.out)
    except (ValueError, OSError) as err:
        print(f"prepare_drive: error: {err}", file=sys.stderr)
        return 1
    print(f"{folder}: verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
