#!/usr/bin/env python
"""Verify a DRIVE training folder, or unpack a DRIVE zip / reorganise a flat folder, then verify.

Examples:
    python data_scripts/prepare_drive.py ../shared/data/drive/training
    python data_scripts/prepare_drive.py ~/Downloads/DRIVE.zip --out data/drive
    python data_scripts/prepare_drive.py ~/Downloads/DRIVE.zip --out data/drive_test --split test

The result holds ``images/NN_training.tif``, ``1st_manual/NN_manual1.gif`` and
``mask/NN_training_mask.gif`` (the layout ``data.layout: drive`` expects; annotations and masks may
be any image format the DRIVE loader reads: .gif, .png, .tif, ...). From the release's
``DRIVE/{training,test}`` the training split is used unless ``--split test`` is given. A zip is
unpacked and a flat folder sorted in a staging folder inside ``--out``; only a verified result is
moved into ``--out``. Thin wrapper over :func:`kmunet.data.prepare.prepare_drive`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and prepare the DRIVE folder; returns the exit code (1 on errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="DRIVE folder, folder holding DRIVE/{training,test}, flat folder of DRIVE "
                                       "files, or DRIVE zip")
    parser.add_argument("--out", default=None, help="output folder (needed for a zip or a flat folder)")
    parser.add_argument("--split", default="training",
                        help="split to use when the source holds several: training or test (default: training; "
                             "the test split is only used when asked for)")
    args = parser.parse_args(argv)

    # imported after parsing (it loads torch), so --help stays fast; the valid splits are its DRIVE_SPLITS
    from kmunet.data.prepare import DRIVE_SPLITS, prepare_drive, raster_files

    if args.split not in DRIVE_SPLITS:
        parser.error(f"argument --split: invalid choice: {args.split!r} (choose from {', '.join(DRIVE_SPLITS)})")

    try:
        folder = prepare_drive(args.source, args.out, split=args.split)
    except (ValueError, OSError) as err:
        print(f"prepare_drive: error: {err}", file=sys.stderr)
        return 1
    n_images = len(raster_files(folder / "images"))
    print(f"{folder}: verified (DRIVE {args.split} split, {n_images} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
