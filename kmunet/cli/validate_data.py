"""``kmunet validate-data``: check a dataset against a config before training."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate-data`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "validate-data",
        help="check a dataset (labels, shapes, affines, label values, NaN) before training",
        description=(
            "Check every case of DATA_DIR: every file readable (.nii.gz to the end of its gzip stream, so "
            "a corrupt or truncated file is caught), equal image/label shapes and affines, label values "
            "within the configured classes, no NaN/inf. An image without a label is a warning (training "
            "leaves it out); no labelled case at all is fatal. Prints every problem, then a summary of "
            "spacings, orientations, shapes and label values. Exit code 1 if a problem is fatal."
        ),
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="dataset folder (MSD, images/+labels/ or DRIVE)")
    parser.add_argument("--config", default=None, help="experiment YAML (default: built-in defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override such as data.class_names=[bg,fg] (repeatable)",
    )
    parser.add_argument("--max-cases", type=int, default=None, help="check only the first N cases")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate ``args.data_dir``; print the report; return 1 on fatal problems, else 0."""
    from kmunet.config import load_config
    from kmunet.data.validation import validate_dataset

    config = load_config(args.config, args.overrides)
    report = validate_dataset(args.data_dir, config, max_cases=args.max_cases)
    print(report.format())
    for hint in report.hints:
        print(f"hint: {hint}")
    return 0 if report.ok else 1
