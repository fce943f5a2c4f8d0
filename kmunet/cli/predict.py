"""``kmunet predict``: segment a folder of NIfTI files / DICOM series with a kmunet checkpoint."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-parser."""
    from kmunet.inference.predict import DEFAULT_CHECKPOINT

    parser = subparsers.add_parser(
        "predict",
        help="segment NIfTI files and DICOM series (file or folder) into NIfTI / DICOM-SEG masks",
        description=(
            "Segment every NIfTI file (.nii, .nii.gz) and DICOM series under --input with a kmunet checkpoint. "
            "Masks keep the input's exact geometry. Bad inputs are reported and skipped; the exit code is 1 "
            "when any case failed. Multi-GPU: torchrun --nproc_per_node N -m kmunet predict ..."
        ),
    )
    parser.add_argument("--input", required=True, help="NIfTI file, DICOM file or folder (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder (masks, predict_report.json/.csv)")
    parser.add_argument("--checkpoint", nargs="+", action="extend", default=None,
                        help=f"kmunet checkpoint (.pt; default {DEFAULT_CHECKPOINT}, the shipped hippocampus model, "
                             "found from any working directory); several: an ensemble (softmax averaged)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run the network")
    parser.add_argument("--format", dest="fmt", default="nifti", choices=["nifti", "dicom-seg"],
                        help="mask format (dicom-seg for DICOM inputs; NIfTI inputs still get NIfTI)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write softmax maps as NIfTI")
    parser.add_argument("--png", action="store_true", help="also write contour overlays as PNG (<case>.png: the three mid-planes of a volume; "
                             "<case>_overlay.png beside the PNG mask of a 2D image)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (without it a case whose outputs exist is kept, or fails "
                             "when the earlier report says another input made them); a failed redo keeps the "
                             "earlier outputs")
    parser.add_argument("--allow-output-in-input", action="store_true",
                        help="permit --output inside --input (a case whose output would be an input file, or "
                             "that another case would also write, still fails)")
    parser.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass (default: training's)")
    parser.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: training's)")
    parser.add_argument("--tta", action="store_true",
                        help="mirroring test-time augmentation along the axes training flipped (nnU-Net style)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet predict``; returns 0 when every case succeeded, else 1."""
    from kmunet.inference import predict_folder
    from kmunet.inference.predict import DEFAULT_CHECKPOINT

    report = predict_folder(
        args.input,
        args.output,
        checkpoint=args.checkpoint or DEFAULT_CHECKPOINT,
        device=args.device,
        fmt=args.fmt,
        save_probabilities=args.save_probabilities,
        png=args.png,
        overwrite=args.overwrite,
        allow_output_in_input=args.allow_output_in_input,
        sw_batch_size=args.sw_batch_size,
        overlap=args.overlap,
        tta=args.tta,
        progress=not args.no_progress,
    )
    ok = sum(c.status == "ok" for c in report.cases)
    kept = sum(c.status == "exists" for c in report.cases)
    warned = sum(bool(c.warning) for c in report.cases if c.status == "ok")
    noted = sum(bool(c.note) for c in report.cases if c.status == "exists")
    print(f"{ok} case(s) segmented{f' ({warned} with a warning: see above)' if warned else ''}, {kept} already done "
          f"(kept; --overwrite redoes them{f'; {noted} with a note: see above' if noted else ''}), "
          f"{len(report.failed)} failed, {len(report.skipped)} other file(s) skipped (reasons in the report); "
          f"report {report.report_json}")
    return report.exit_code
