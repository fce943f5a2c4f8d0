"""``kmunet resample``: resample a NIfTI volume to a new voxel size (scan-specific INR, learned prior, baselines)."""

from __future__ import annotations

import argparse
import sys

from kmunet.options import INR_MODELS, RESAMPLE_METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``resample`` sub-parser."""
    parser = subparsers.add_parser(
        "resample",
        help="resample a NIfTI volume with an implicit neural representation, a learned prior or interpolation",
        description=(
            "Resample a 3-D NIfTI volume to a new voxel size. The new grid keeps the input's origin (first voxel "
            "centre) and orientation and covers its extent. Methods: a scan-specific INR fitted in world "
            "coordinates (--method inr, default), a learned resampler (--prior MODEL), the two fused "
            "(--prior MODEL --method prior+inr, weights from self-validation on the input), trilinear (linear) or "
            "cubic B-spline (bspline) interpolation. When downsampling (a coarser voxel size along an axis), linear "
            "and bspline smooth the input along that axis first (Gaussian anti-aliasing, sigma = sqrt(r^2 - 1) / 2 "
            "input voxels for r times coarser); the INR and prior methods point-sample and say so. With --prior, a "
            "warning is printed when the factors or voxel size are outside what the prior was trained on."
        ),
    )
    parser.add_argument("--input", required=True, help="input NIfTI volume (.nii or .nii.gz)")
    parser.add_argument("--output", required=True, help="output NIfTI path (written atomically)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                        help="new voxel size in mm along the input's voxel axes")
    target.add_argument("--factor", type=float,
                        help="sample F times as densely (along --axis, else all axes); the end voxels are kept, so "
                             "N samples become (N - 1) * F + 1")
    target.add_argument("--plane", type=float, nargs=9, metavar=("OX", "OY", "OZ", "UX", "UY", "UZ", "VX", "VY", "VZ"),
                        help="sample one (oblique) plane instead: world origin of pixel (0, 0) and the row/column "
                             "directions u, v (mm, the input's world frame); output shape (rows, columns, 1)")
    parser.add_argument("--plane-size", type=int, nargs=2, metavar=("ROWS", "COLS"), default=None,
                        help="pixels of the --plane image (required with --plane)")
    parser.add_argument("--plane-spacing", type=float, default=1.0, help="pixel size of the --plane image in mm (default 1)")
    parser.add_argument("--axis", type=int, choices=(0, 1, 2), default=None, help="voxel axis for --factor")
    parser.add_argument("--method", choices=tuple(m for m in RESAMPLE_METHODS if m != "prior"), default="inr", help="resampling method (default inr)")
    parser.add_argument("--inr", choices=INR_MODELS, default="siren", help="INR model (default siren)")
    parser.add_argument("--iterations", type=int, default=None, help="INR fitting steps (default 800)")
    parser.add_argument("--prior", default=None, metavar="MODEL",
                        help="learned resampler checkpoint (from kmunet train-resampler); replaces --method inr, "
                             "or is fused with it by --method prior+inr")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to fit / run (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="INR seed (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide the progress bar (as in the other commands)")
    parser.add_argument("--progress", dest="progress", action="store_true", help=argparse.SUPPRESS)  # the old opt-in flag
    parser.add_argument("--world-coordinates", action="store_true",
                        help="fit the INR in isotropic world coordinates (default: each axis' coordinate is divided "
                             "by its upsampling factor, lowering the bandwidth along upsampled axes)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet resample``; returns 0 on success."""
    from pathlib import Path

    import nibabel as nib

    from kmunet.inference.writers import atomic_path, check_output_file
    from kmunet.inr.resample import resample_plane, resample_volume

    if (args.plane is None) != (args.plane_size is None):
        raise ValueError("--plane and --plane-size go together")
    if args.axis is not None and args.factor is None:
        raise ValueError("--axis needs --factor")
    if args.prior is not None and args.method not in ("inr", "prior+inr"):
        raise ValueError(f"--prior cannot be combined with --method {args.method}")
    if args.prior is None and args.method == "prior+inr":
        raise ValueError("--method prior+inr needs --prior MODEL")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    output = Path(args.output)
    if not output.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"--output must end in .nii or .nii.gz, got {output}")
    check_output_file(output)  # before the fit, not after
    common = dict(method=args.method, inr=args.inr, iterations=args.iterations, device=args.device, seed=args.seed,
                  prior=args.prior, progress=args.progress, notify=_warn)
    if args.plane is not None:
        origin, u, v = args.plane[:3], args.plane[3:6], args.plane[6:]
        image = resample_plane(args.input, origin, u, v, args.plane_size, args.plane_spacing, **common)
    else:
        image = resample_volume(args.input, spacing=args.spacing, factor=args.factor, axis=args.axis,
                                scaled_coordinates=not args.world_coordinates, **common)
    with atomic_path(output) as tmp:
        nib.save(image, str(tmp))
    zooms = ", ".join(f"{z:.4g}" for z in image.header.get_zooms()[:3])
    print(f"{args.input} -> {output} shape {tuple(image.shape)} spacing ({zooms}) mm")
    return 0


def _warn(message: str) -> None:
    """Print a one-line warning of the resampling library to stderr (before the work starts)."""
    print(f"kmunet resample: warning: {message}", file=sys.stderr, flush=True)
