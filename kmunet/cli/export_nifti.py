"""``kmunet export-nifti``: DICOM series, DICOM-SEG and NumPy label arrays to NIfTI."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-nifti`` sub-parser."""
    parser = subparsers.add_parser(
        "export-nifti",
        help="convert DICOM series, DICOM-SEG objects or .npy label arrays to NIfTI",
        description=(
            "Convert DICOM image series (folders, several series allowed), DICOM-SEG files, or a NumPy "
            "(x, y, z) label array with --reference (NIfTI file or DICOM series) to NIfTI with correct geometry."
        ),
    )
    parser.add_argument("--input", required=True, help="DICOM folder/file, DICOM-SEG file or .npy array")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--reference", default=None,
                        help="geometry source: required for .npy, optional for DICOM-SEG (its source series)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet export-nifti``; returns 0 when something was written and nothing failed."""
    from kmunet.inference import export_nifti

    report = export_nifti(args.input, args.output, reference=args.reference, overwrite=args.overwrite)
    for src, dst in report.written:
        print(f"{src} -> {dst}")
    return report.exit_code
