"""``kmunet recon``: reconstruct an undersampled (or retrospectively undersampled) 2D MRI slice."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from kmunet.checks import check_positive
from kmunet.options import (
    DC_CG_MU,
    DEFAULT_ACCELERATION,
    DEFAULT_CENTER_FRACTION,
    DEFAULT_MASK_SEED,
    INR_MODELS,
    MASK_KINDS,
    RECON_METHODS,
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
    src.add_argument("--kspace", help="k-space file (.npy, .npz, .cfl/.hdr, .h5, .dat)")
    src.add_argument("--image", help="image to simulate single-coil k-space from (NIfTI, DICOM series folder or one file of it, .npy)")
    parser.add_argument("--output", required=True, help="output magnitude image (.nii or .nii.gz)")
    parser.add_argument("--slice", type=int, default=None, help="slice of a 3D volume / multi-slice file (default: the middle one, or the given DICOM file's)")
    parser.add_argument("--acceleration", type=float, default=DEFAULT_ACCELERATION,
                        help=f"retrospective acceleration R (default {DEFAULT_ACCELERATION:g})")
    parser.add_argument("--center-fraction", type=float, default=DEFAULT_CENTER_FRACTION,
                        help=f"fully sampled centre fraction (default {DEFAULT_CENTER_FRACTION:g})")
    parser.add_argument("--mask", choices=MASK_KINDS, default="random", help="retrospective mask kind (default random)")
    parser.add_argument("--mask-seed", type=int, default=DEFAULT_MASK_SEED, help=f"mask seed (default {DEFAULT_MASK_SEED})")
    parser.add_argument("--method", choices=RECON_METHODS, default="inr", help="reconstruction method (default inr)")
    parser.add_argument("--inr", choices=INR_MODELS, default="siren", help="INR network for --method inr (default siren)")
    parser.add_argument("--iterations", type=int, default=None, help="INR Adam steps / CS iterations")
    parser.add_argument("--lam", type=float, default=None, help="CS regularisation weight")
    parser.add_argument("--tv-weight", type=float, default=None, help="INR TV prior weight")
    parser.add_argument("--omega-0", type=float, default=None,
                        help="SIREN first-layer frequency (default 30; 15 did better at 8x in docs/RESULTS.md)")
    parser.add_argument("--dc-mu", type=float, default=None,
                        help=f"weight of the INR against the samples in its final multi-coil data-consistency step "
                             f"(default {DC_CG_MU:g}; smaller trusts the samples more)")
    parser.add_argument("--reference", default=None,
                        help="reference image for metrics (NIfTI/DICOM/.npy/.cfl); default the fully sampled recon")
    parser.add_argument("--metrics-json", default=None, help="write PSNR/SSIM/NMSE and seconds as JSON")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="INR device (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="INR initialisation seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the INR progress bar")
    parser.set_defaults(func=run)


def _load_reference(path: str, slice_index: int | None, shape: tuple[int, int]) -> np.ndarray:
    """Magnitude ``(H, W)`` of a reference image (BART .cfl first map set, or anything ``load_image`` reads)."""
    import numpy as np

    from kmunet.mri.io import bart_to_coil_first, load_image, read_cfl

    if path.lower().endswith((".cfl", ".hdr")):
        ref = np.abs(bart_to_coil_first(read_cfl(path), path)[0])
    else:
        ref = np.abs(load_image(path, slice_index)[0])
    if ref.shape != tuple(shape):
        raise ValueError(f"{path}: reference shape {list(ref.shape)} differs from k-space {list(shape)}")
    return ref


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet recon``; returns 0 on success."""
    import json
    from pathlib import Path

    import numpy as np

    from kmunet.inference.writers import atomic_path, check_output_file, write_text_atomic
    from kmunet.mri.coils import estimate_sensitivities
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
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.omega_0 is not None and (args.method != "inr" or args.inr != "siren"):
        raise ValueError(f"--omega-0 applies to --method inr --inr siren, not {args.method} / {args.inr}")
    if args.omega_0 is not None and not args.omega_0 > 0:
        raise ValueError(f"--omega-0 must be > 0, got {args.omega_0}")
    if args.dc_mu is not None and args.method != "inr":
        raise ValueError(f"--dc-mu applies to --method inr, not {args.method}")
    if args.dc_mu is not None:
        check_positive("--dc-mu", args.dc_mu)

    data = simulate_kspace(args.image, args.slice) if args.image else load_kspace(args.kspace, args.slice)
    reference = None
    if data.is_undersampled:
        mask = data.mask
        mask_info = {"kind": "from data", "sampled_fraction": float(mask.mean())}
        print(f"input is undersampled ({mask.mean():.1%} of k-space sampled): using its own mask")
    else:
        mask = make_mask(args.mask, data.shape, args.acceleration, args.center_fraction, seed=args.mask_seed)
        mask_info = {"kind": args.mask, "acceleration": args.acceleration, "center_fraction": args.center_fraction,
                     "seed": args.mask_seed, "sampled_fraction": float(mask.mean())}
        if args.reference is None:
            reference = reference_image(data)
    sens = estimate_sensitivities(data.kspace * mask)
    result = reconstruct(data, mask, method=args.method, inr=args.inr, iterations=args.iterations, lam=args.lam,
                         tv_weight=args.tv_weight, sens=sens, device=args.device, seed=args.seed,
                         progress=not args.no_progress, omega_0=args.omega_0,
                         **({} if args.dc_mu is None else {"dc_mu": args.dc_mu}))
    magnitude = result.magnitude
    normalised = False
    if args.reference is not None:
        reference = _load_reference(args.reference, args.slice, data.shape)
        normalised = True  # external references have their own intensity scale: least-squares fit to it
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
        nib.save(img, str(tmp))
    print(f"{args.method}{'-' + args.inr if args.method == 'inr' else ''}: {result.seconds:.1f} s -> {out}")
    if metrics is not None:
        print("  " + "  ".join(f"{k.upper()} {v:.4g}" for k, v in metrics.items()))
    if args.metrics_json:
        payload = {"method": args.method, "seconds": result.seconds, "metrics": metrics,
                   "reference": args.reference or ("fully sampled" if metrics is not None else None),
                   "reference_scaled": normalised, "mask": mask_info, "source": data.source,
                   "slice": data.slice_index, "info": {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, list, bool))}}
        if metrics is None:
            print("  no reference for metrics (undersampled input without --reference)")
        write_text_atomic(args.metrics_json, json.dumps(payload, indent=2) + "\n")
    return 0
