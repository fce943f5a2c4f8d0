"""``kmunet recon``: reconstruct an undersampled (or retrospectively undersampled) 2D MRI slice."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from kmunet.mri.io import KSpaceData

from kmunet.checks import check_positive, check_real
from kmunet.options import (
    DC_CG_MU,
    DEFAULT_ACCELERATION,
    DEFAULT_CENTER_FRACTION,
    DEFAULT_MASK_SEED,
    INR_MODELS,
    INR_PRIORS,
    MASK_KINDS,
    RECON_METHODS,
)

#: Methods each method-specific option applies to (an option given with another method is an error).
OPTION_METHODS: dict[str, tuple[str, ...]] = {
    "--inr": ("inr",),
    "--iterations": ("inr", "cs-tv", "cs-l1"),
    "--lam": ("cs-tv", "cs-l1"),
    "--tv-weight": ("inr",),
    "--prior": ("inr",),
    "--dc-mu": ("inr",),
}

SLICE_HELP = (
    "slice to reconstruct, along the input's slice axis: the third voxel axis of a 3D image volume; axis 0 of "
    "a 3D/4D .h5 'kspace' and of a 4D (slices, coils, H, W) .npy/.npz array; BART dim 13, or dim 2 of 3D BART "
    "k-space (after an inverse FFT along it); the twix slice counter. Default the middle slice, or the given "
    "DICOM file's. An error for inputs without a slice axis: 2D images, (H, W) and (coils, H, W) arrays "
    "(3D .npy/.npz is always coils), 2D BART and 2D .h5. A --reference volume uses the same slice"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``recon`` sub-parser."""
    parser = subparsers.add_parser(
        "recon",
        help="reconstruct undersampled MRI k-space (INR, zero-filled, CS-TV, CS-L1)",
        description=(
            "Reconstruct one 2D slice from k-space (.npy/.npz, BART .cfl, fastMRI .h5, Siemens twix .dat) or "
            "from k-space simulated from an image (NIfTI, DICOM series, .npy). Already undersampled k-space "
            "(zeros at unsampled points) is used as is; fully sampled k-space is undersampled retrospectively "
            "with the --mask options. Writes the magnitude image as NIfTI."
        ),
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--kspace", help="k-space file (.npy/.npz: (H, W), (coils, H, W) or (slices, coils, H, W), .npz "
                                      "array 'kspace' or its only array; .cfl/.hdr or the BART base name; .h5; .dat)")
    src.add_argument("--image", help="image to simulate single-coil k-space from (NIfTI, DICOM series folder or one file of it, .npy)")
    parser.add_argument("--output", required=True, help="output magnitude image (.nii or .nii.gz)")
    parser.add_argument("--slice", type=int, default=None, help=SLICE_HELP)
    parser.add_argument("--acceleration", type=float, default=DEFAULT_ACCELERATION,
                        help=f"retrospective acceleration R (default {DEFAULT_ACCELERATION:g})")
    parser.add_argument("--center-fraction", type=float, default=DEFAULT_CENTER_FRACTION,
                        help=f"fully sampled centre fraction (default {DEFAULT_CENTER_FRACTION:g}; multi-coil data "
                             f"needs > 0 to estimate coil sensitivities)")
    parser.add_argument("--mask", choices=MASK_KINDS, default="random", help="retrospective mask kind (default random)")
    parser.add_argument("--mask-seed", type=int, default=DEFAULT_MASK_SEED, help=f"mask seed (default {DEFAULT_MASK_SEED})")
    parser.add_argument("--method", choices=RECON_METHODS, default="inr", help="reconstruction method (default inr)")
    parser.add_argument("--inr", choices=INR_MODELS, default=None, help="INR network for --method inr (default siren)")
    parser.add_argument("--iterations", type=int, default=None, help="INR Adam steps / CS iterations (not zero-filled)")
    parser.add_argument("--lam", type=float, default=None, help="CS regularisation weight (--method cs-tv / cs-l1)")
    parser.add_argument("--tv-weight", type=float, default=None, help="INR image-prior weight (--method inr)")
    parser.add_argument("--prior", choices=INR_PRIORS, default=None,
                        help="INR image prior: tv (default) or log-tv, which penalises strong edges less "
                             "(--method inr; see docs/RESULTS.md)")
    parser.add_argument("--omega-0", type=float, default=None,
                        help="SIREN first-layer frequency (default 30; 15 did better at 8x in docs/RESULTS.md)")
    parser.add_argument("--dc-mu", type=float, default=None,
                        help=f"weight of the INR against the samples in its final multi-coil data-consistency step "
                             f"(default {DC_CG_MU:g}; smaller trusts the samples more; multi-coil --method inr only)")
    parser.add_argument("--reference", default=None,
                        help="reference image for metrics (NIfTI/DICOM/.npy/.cfl); default the fully sampled recon")
    parser.add_argument("--metrics-json", default=None,
                        help="write PSNR/SSIM/NMSE and seconds (total, and of the coil sensitivities) as JSON")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="INR device (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="INR initialisation seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the INR progress bar")
    parser.set_defaults(func=run)


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse an output that is another output or an input (it would be overwritten)."""
    out = Path(args.output).resolve()
    if args.metrics_json and Path(args.metrics_json).resolve() == out:
        raise ValueError(f"--metrics-json {args.metrics_json} is the same file as --output {args.output}; give two files")
    outputs = [("--output", args.output)] + ([("--metrics-json", args.metrics_json)] if args.metrics_json else [])
    inputs = [(flag, value) for flag, value in (("--kspace", args.kspace), ("--image", args.image),
                                                ("--reference", args.reference)) if value]
    for oflag, ovalue in outputs:
        for iflag, ivalue in inputs:
            if Path(ovalue).resolve() == Path(ivalue).resolve():
                raise ValueError(f"{oflag} {ovalue} is the same file as {iflag} {ivalue}; it would be overwritten")


def _check_options(args: argparse.Namespace) -> str:
    """Validate option values and refuse options that do not apply to ``--method`` (before any work).

    Returns:
        The INR to use (``--inr``, default ``siren``).
    """
    for flag, methods in OPTION_METHODS.items():
        if getattr(args, flag[2:].replace("-", "_")) is not None and args.method not in methods:
            raise ValueError(f"{flag} applies to --method {' / '.join(methods)}, not {args.method}")
    inr = args.inr or "siren"
    if args.omega_0 is not None and (args.method != "inr" or inr != "siren"):
        raise ValueError(f"--omega-0 applies to --method inr --inr siren, not {args.method} / {inr}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.omega_0 is not None and not args.omega_0 > 0:
        raise ValueError(f"--omega-0 must be > 0, got {args.omega_0}")
    if args.dc_mu is not None:
        check_positive("--dc-mu", args.dc_mu)
    if args.lam is not None:
        check_positive("--lam", args.lam)
    if args.tv_weight is not None:
        check_real("--tv-weight", args.tv_weight, low=0.0)
    return inr


def _load_reference(path: str, slice_index: int | None, shape: tuple[int, int]) -> np.ndarray:
    """Magnitude ``(H, W)`` of ``--reference``, checked against the k-space slice ``shape``.

    Args:
        path: BART ``.cfl``/``.hdr`` (or base name; first map set) or anything ``load_image`` reads.
        slice_index: slice to take from a reference volume (that of the reconstructed slice); a 2D
            reference ignores it.
        shape: ``(H, W)`` of the k-space slice.

    Raises:
        ValueError, FileNotFoundError: unreadable reference or a shape other than ``shape`` (the message
            names ``--reference`` and the file).
    """
    import numpy as np

    from kmunet.mri.io import is_cfl_base, load_bart_image, load_image

    try:
        if path.lower().endswith((".cfl", ".hdr")) or is_cfl_base(path):
            ref = np.abs(load_bart_image(path, slice_index, slice_optional=True))
        else:
            ref = np.abs(load_image(path, slice_index, slice_optional=True)[0])
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--reference: {err}") from None
    except ValueError as err:
        raise ValueError(f"--reference: {err}") from None
    if ref.shape != tuple(shape):
        raise ValueError(f"--reference {path}: shape {list(ref.shape)} differs from the k-space slice {list(shape)}")
    return ref


def _check_calibration(data: KSpaceData, mask: np.ndarray, retrospective: bool, center_fraction: float) -> None:
    """Refuse multi-coil k-space whose masked centre cannot give coil sensitivities, before any fitting.

    Args:
        data: the input slice.
        mask: the sampling mask used.
        retrospective: ``mask`` comes from the --mask options (else from the data itself).
        center_fraction: ``--center-fraction`` (for the hint).

    Raises:
        ValueError: no fully sampled centre (the message names the file and, where it helps, the flag).
    """
    from kmunet.mri.coils import calibration_size

    if data.num_coils > 1 and min(calibration_size(data.kspace * mask)) < 1:
        hint = (f"multi-coil data needs a sampled centre: use --center-fraction > 0 (got {center_fraction:g})"
                if retrospective else "the file's own sampling has no fully sampled centre")
        raise ValueError(f"{data.source}: k-space centre is not sampled: cannot estimate coil sensitivities; {hint}")


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet recon``; returns 0 on success.

    Every check that needs no fitting (paths, options, the input, the reference) runs before the
    reconstruction; the output files are written atomically.
    """
    import json

    import numpy as np

    from kmunet.inference.writers import atomic_path, check_output_file, write_text_atomic
    from kmunet.mri.cs import fit_intensity
    from kmunet.mri.io import load_kspace, simulate_kspace
    from kmunet.mri.masks import make_mask
    from kmunet.mri.metrics import all_metrics
    from kmunet.mri.recon import reconstruct, reference_image

    out = Path(args.output)
    if not out.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"{out}: output must end in .nii or .nii.gz")
    check_output_file(out)  # both outputs are checked before minutes of fitting
    if args.metrics_json:
        check_output_file(args.metrics_json)
    _check_paths(args)
    inr = _check_options(args)

    data = simulate_kspace(args.image, args.slice) if args.image else load_kspace(args.kspace, args.slice)
    if args.dc_mu is not None and data.num_coils == 1:
        raise ValueError(f"--dc-mu applies to multi-coil k-space (its conjugate-gradient data-consistency step); "
                         f"{data.source} is single-coil, where the measured samples replace the INR's exactly")
    reference = None
    normalised = False
    if args.reference is not None:
        reference = _load_reference(args.reference, data.slice_index, data.shape)  # --slice, or the image's own
        normalised = True  # external references have their own intensity scale: least-squares fit to it
    retrospective = not data.is_undersampled
    if retrospective:
        mask = make_mask(args.mask, data.shape, args.acceleration, args.center_fraction, seed=args.mask_seed)
        mask_info = {"kind": args.mask, "acceleration": args.acceleration, "center_fraction": args.center_fraction,
                     "seed": args.mask_seed, "sampled_fraction": float(mask.mean())}
        if reference is None:
            reference = reference_image(data)
    else:
        mask = data.mask
        mask_info = {"kind": "from data", "sampled_fraction": float(mask.mean())}
        print(f"input is undersampled ({mask.mean():.1%} of k-space sampled): using its own mask")
    _check_calibration(data, mask, retrospective, args.center_fraction)
    try:
        result = reconstruct(data, mask, method=args.method, inr=inr, iterations=args.iterations, lam=args.lam,
                             tv_weight=args.tv_weight, device=args.device, seed=args.seed,
                             progress=not args.no_progress, omega_0=args.omega_0,
                             **{key: value for key, value in (("dc_mu", args.dc_mu), ("prior", args.prior))
                                if value is not None})
    except ValueError as err:  # e.g. all-zero k-space: name the input
        raise ValueError(f"{data.source}: {err}") from None
    seconds = result.seconds  # includes the coil sensitivities, estimated inside reconstruct
    sens_seconds = result.info["seconds_sensitivities"]
    magnitude = result.magnitude
    metrics = None
    if reference is not None:
        metrics = all_metrics(reference, fit_intensity(reference, magnitude) if normalised else magnitude)

    affine = data.affine
    if affine is None:
        affine = np.diag([*(data.spacing or (1.0, 1.0)), 1.0, 1.0])
    import nibabel as nib

    with atomic_path(out) as tmp:
        img = nib.Nifti1Image(magnitude[:, :, None].astype(np.float32), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        if data.spacing is not None:  # geometry known (twix protocol, NIfTI/DICOM image): millimetres
            img.header.set_xyzt_units(xyz="mm")
        nib.save(img, str(tmp))
    print(f"{args.method}{'-' + inr if args.method == 'inr' else ''}: {seconds:.1f} s -> {out}")
    if metrics is not None:
        print("  " + "  ".join(f"{k.upper()} {v:.4g}" for k, v in metrics.items()))
    if args.metrics_json:
        info = {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, list, bool))
                and k not in ("seconds", "seconds_sensitivities")}
        payload = {"method": args.method, "seconds": seconds, "seconds_sensitivities": sens_seconds,
                   "seconds_reconstruction": seconds - sens_seconds, "metrics": metrics,
                   "reference": args.reference or ("fully sampled" if metrics is not None else None),
                   "reference_scaled": normalised, "mask": mask_info, "source": data.source,
                   "slice": data.slice_index, "info": info}
        if metrics is None:
            print("  no reference for metrics (undersampled input without --reference)")
        write_text_atomic(args.metrics_json, json.dumps(payload, indent=2) + "\n")
    return 0
