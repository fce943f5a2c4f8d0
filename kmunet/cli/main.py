"""Entry point of the ``kmunet`` console script.

Each command lives in its own module ``kmunet.cli.<module>`` exposing ``register(subparsers)``, which
adds a sub-parser whose ``func`` default takes the parsed ``argparse.Namespace`` and returns an exit
code. Command modules import heavy dependencies inside their ``run`` function so that ``kmunet --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from kmunet import __version__

#: Command modules, in the order ``kmunet --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "validate_data",
    "train",
    "evaluate",
    "predict",
    "export_nifti",
    "resample",
    "train_resampler",
    "recon",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``kmunet`` argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="kmunet",
        description="KAN convolutions, KM-UNet segmentation and INR tools for medical imaging.",
    )
    parser.add_argument("--version", action="version", version=f"kmunet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(f"kmunet.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kmunet`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # One clear line for user errors; tracebacks are for bugs (use python -X dev for details).
        print(f"kmunet {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
