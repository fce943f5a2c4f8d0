#!/usr/bin/env python
"""Record the training data's voxel-size and shape range in checkpoints trained before it was stored.

Example:
    python data_scripts/checkpoint_data_summary.py checkpoints/hippocampus_kmunet.pt checkpoints/drive_kmunet.pt

``kmunet train`` stores this summary in every new checkpoint; ``kmunet predict`` uses it to warn when an
input's voxel size or field of view is far from what the model saw. Thin wrapper over
:func:`kmunet.training.checkpoint.add_data_summary` (reads each checkpoint's own ``data.root``, relative to
the working directory, unless ``--data`` is given).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and update each checkpoint; returns the exit code (1 on errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="kmunet checkpoints to update in place")
    parser.add_argument("--data", default=None, help="dataset folder (default: each checkpoint's data.root)")
    args = parser.parse_args(argv)

    from kmunet.training.checkpoint import add_data_summary

    status = 0
    for path in args.checkpoints:
        try:
            summary = add_data_summary(path, args.data)
        except (ValueError, OSError) as err:
            print(f"checkpoint_data_summary: error: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {summary}")
    return status


if __name__ == "__main__":
    sys.exit(main())
