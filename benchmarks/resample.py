"""Through-plane resampling benchmark: interpolation baselines, scan-specific INRs and the learned prior.

Protocol: from a reference volume keep every r-th slice (r = 2, 4) along the through-plane axis (the
reference is first cropped so that its last slice is kept: every reconstructed slice is then an
interpolation), describe the kept slices with the correct NIfTI affine (slice spacing times r, same origin),
resample them back with ``factor=r`` along that axis and score PSNR/SSIM only on the dropped slices
(``data_range`` = reference maximum; SSIM map over the 3-D volume, averaged on the dropped slices).

Data (read-only, ``../shared/data``):

* held-out hippocampus T1 volumes (MSD Task04; axis 2): the hold-out list stored in the prior
  checkpoint, or the same deterministic split (:func:`kmunet.inr.prior.holdout_split`, 20 volumes, seed 0);
* one DICOM MR series (``dicom_mr/Study1``, T2, 512 x 512 x 22) read with SimpleITK and averaged in-plane
  to 128 x 128 (axis 2 = slices).

The first ``--inr`` model (default SIREN) is scored on every case, with the default per-axis coordinate
scaling (``inr-siren``) and in isotropic world coordinates (``inr-siren-world``, unless ``--no-world``);
``--compare-inr`` models (default Fourier features, WIRE, KAN; ``--compare-iterations`` steps) on the
first hippocampus case at factor 2 only, to fit a CPU budget. With a prior, ``prior`` is the learned
prior alone and ``prior+siren`` the prior fused with the first INR (``method="prior+inr"``: weights from
self-validation on the low-resolution input, :func:`kmunet.inr.resample.fusion_weight`; ``--no-fused`` skips
it). Also times one scan-specific INR resampling of a 64^3 volume (factor 2 along one axis).

Run: ``OMP_NUM_THREADS=1 python benchmarks/resample.py [--quick] [--prior checkpoints/resampler_hippocampus.pt]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()


def _metrics():
    try:
        from kmunet.mri.metrics import psnr, ssim
        return psnr, ssim
    except ImportError:  # pragma: no cover - fallback without kmunet.mri
        def psnr(ref, img, mask=None, data_range=None):
            ref, img = np.asarray(ref, float), np.asarray(img, float)
            if mask is not None:
                ref, img = ref[mask], img[mask]
            rng = float(ref.max()) if data_range is None else data_range
            return float(10 * np.log10(rng**2 / np.mean((ref - img) ** 2)))
        return psnr, None


def load_dicom_series(folder: Path, inplane: int = 128):
    """DICOM series -> nibabel image (RAS affine), averaged in-plane to ``inplane`` pixels."""
    import nibabel as nib
    import SimpleITK as sitk

    from kmunet.data.io import read_dicom_series, sitk_affine_ras

    img = read_dicom_series(folder)
    arr = sitk.GetArrayFromImage(img).astype(np.float32).transpose(2, 1, 0)  # (x, y, z)
    affine = sitk_affine_ras(img)
    f = arr.shape[0] // inplane
    if f > 1:
        nx, ny = arr.shape[0] // f, arr.shape[1] // f
        arr = arr[: nx * f, : ny * f].reshape(nx, f, ny, f, arr.shape[2]).mean(axis=(1, 3))
        # The first new voxel centre is the mean of the first f x f block's centres.
        affine[:3, 3] += affine[:3, :2] @ np.full(2, (f - 1) / 2.0)
        affine[:3, :2] *= f
    return nib.Nifti1Image(arr, affine)


def drop_slices(img, r: int, axis: int):
    """``(reference image cropped so (n - 1) % r == 0, low-res image, dropped-slice mask)``."""
    import nibabel as nib

    data = np.asarray(img.dataobj, dtype=np.float32)
    n = (data.shape[axis] - 1) // r * r + 1
    sl = [slice(None)] * 3
    sl[axis] = slice(0, n)
    ref = data[tuple(sl)]
    sl[axis] = slice(0, n, r)
    low = np.ascontiguousarray(ref[tuple(sl)])
    affine = img.affine.copy()
    affine[:3, axis] *= r
    mask = np.zeros(ref.shape, dtype=bool)
    sl[axis] = np.arange(n) % r != 0
    mask[tuple(sl)] = True
    return nib.Nifti1Image(ref, img.affine), nib.Nifti1Image(low, affine), mask


def run_case(name, img, axis, factors, methods, args, results):
    from kmunet.inr.resample import resample_volume

    psnr, ssim = _metrics()
    data_key, case = name.split(":")
    for r in factors:
        ref_img, low, mask = drop_slices(img, r, axis)
        ref = np.asarray(ref_img.dataobj, dtype=np.float32)
        rng = float(ref.max())
        for label, kw in methods:
            t = time.perf_counter()
            out = resample_volume(low, factor=r, axis=axis, device=args.device, seed=0, **kw)
            secs = time.perf_counter() - t
            rec = np.asarray(out.dataobj, dtype=np.float32)
            assert rec.shape == ref.shape, (rec.shape, ref.shape)
            assert np.allclose(out.affine, ref_img.affine, atol=1e-4), (out.affine, ref_img.affine)
            p = psnr(ref, rec, mask=mask, data_range=rng)
            s = ssim(ref, rec, mask=mask, data_range=rng) if ssim else float("nan")
            results.setdefault((data_key, r, label), {})[case] = (p, s, secs)
            print(f"{name:28s} x{r} {label:14s} PSNR {p:6.2f} dB  SSIM {s:.4f}  {secs:6.1f} s", flush=True)


def print_summary(results) -> None:
    print("\nSummary (mean over volumes; PSNR/SSIM on dropped slices only; 'vs bspline' on the same volumes)")
    print(f"{'data':12s} {'factor':>6s} {'method':14s} {'n':>2s} {'PSNR dB':>8s} {'SSIM':>7s} {'s/vol':>6s}  {'vs bspline':>10s}")
    for (data, r, label), rows in results.items():
        cases = sorted(rows)
        base = results.get((data, r, "bspline"), {})
        p = statistics.mean(rows[c][0] for c in cases)
        d = p - statistics.mean(base[c][0] for c in cases) if all(c in base for c in cases) else float("nan")
        print(f"{data:12s} {r:6d} {label:14s} {len(cases):2d} {p:8.2f} {statistics.mean(rows[c][1] for c in cases):7.4f} "
              f"{statistics.mean(rows[c][2] for c in cases):6.1f}  {d:+10.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 hippocampus volumes, factor 2 only, 150 INR steps")
    parser.add_argument("--cases", type=int, default=5, help="held-out hippocampus volumes")
    parser.add_argument("--prior", default=str(REPO / "checkpoints" / "resampler_hippocampus.pt"))
    parser.add_argument("--inr", nargs="*", default=["siren"], help="INR models scored on every case")
    parser.add_argument("--compare-inr", nargs="*", default=["fourier", "wire", "kan"],
                        help="further INR models scored on the first hippocampus case only (CPU budget)")
    parser.add_argument("--iterations", type=int, default=None, help="INR steps (default: resample default, 800)")
    parser.add_argument("--compare-iterations", type=int, default=300, help="steps of the --compare-inr models")
    parser.add_argument("--series", default="37916-T2reg-88910", help="DICOM series folder in dicom_mr/Study1")
    parser.add_argument("--no-dicom", action="store_true")
    parser.add_argument("--no-world", action="store_true",
                        help="skip the first INR in isotropic world coordinates (scaled_coordinates=False)")
    parser.add_argument("--no-fused", action="store_true",
                        help="skip the prior fused with the first INR (method prior+inr: two more INR fits per case)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import nibabel as nib
    import torch

    from kmunet.inr.prior import holdout_split, list_volumes, load_resampler
    from kmunet.inr.resample import resample_volume

    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"kmunet resample benchmark  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  torch {torch.__version__}")
    prior = Path(args.prior) if args.prior and Path(args.prior).is_file() else None
    hippo = DATA / "hippocampus" / "imagesTr"
    if prior is not None:
        cfg = load_resampler(prior).train_config
        held = [hippo / n for n in cfg.get("holdout", [])]
        shown = prior.relative_to(REPO) if prior.is_relative_to(REPO) else prior
        print(f"prior: {shown} ({cfg.get('steps')} steps, {cfg.get('seconds')} s training, "
              f"{len(cfg.get('train', []))} training volumes)")
    else:
        print("prior: none (no checkpoint)")
        held = holdout_split(list_volumes(hippo), 20, 0)[1]
    cases = 2 if args.quick else args.cases
    factors = (2,) if args.quick else (2, 4)
    iterations = args.iterations if args.iterations is not None else (150 if args.quick else None)
    methods = [("linear", {"method": "linear"}), ("bspline", {"method": "bspline"})]
    methods += [(f"inr-{m}", {"method": "inr", "inr": m, "iterations": iterations}) for m in args.inr]
    if not args.no_world:  # the same INR fitted in isotropic world coordinates (no per-axis scaling)
        methods += [(f"inr-{m}-world", {"method": "inr", "inr": m, "iterations": iterations, "scaled_coordinates": False})
                    for m in args.inr[:1]]
    if prior is not None:
        methods.append(("prior", {"prior": prior}))
        if args.inr and not args.no_fused:  # the prior fused with the first INR (self-validated weights)
            methods.append((f"prior+{args.inr[0]}", {"method": "prior+inr", "prior": prior, "inr": args.inr[0],
                                                     "iterations": iterations}))
    compare_its = iterations if args.quick else args.compare_iterations
    compare = [(f"inr-{m}", {"method": "inr", "inr": m, "iterations": compare_its}) for m in args.compare_inr]

    results: dict = {}
    for i, path in enumerate(held[:cases]):
        name = f"hippocampus:{path.name.split('.')[0]}"
        run_case(name, nib.load(str(path)), 2, factors, methods, args, results)
        if i == 0 and compare:
            run_case(name, nib.load(str(path)), 2, factors[:1], compare, args, results)
    series = DATA / "dicom_mr" / "Study1" / args.series
    if not args.no_dicom and series.is_dir():
        img = load_dicom_series(series)
        print(f"MR series {args.series}: shape {img.shape}, spacing {np.round(img.header.get_zooms(), 3).tolist()} mm")
        run_case(f"mr:{args.series}", img, 2, factors, methods, args, results)
    print_summary(results)

    # Timing: one 64^3 scan-specific INR resampling (factor 2 along axis 2 -> 64 x 64 x 127).
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 64)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    vol = (np.sin(3 * X) * np.cos(2 * Y) + (X**2 + Y**2 + Z**2 < 0.4) + 0.05 * rng.standard_normal(X.shape)).astype(np.float32)
    img = nib.Nifti1Image(vol, np.eye(4))
    for m in args.inr[:1]:
        t = time.perf_counter()
        out = resample_volume(img, factor=2, axis=2, method="inr", inr=m, iterations=iterations, device=args.device)
        print(f"timing: 64^3 -> {tuple(out.shape)} with inr-{m}: {time.perf_counter() - t:.1f} s (target < 60 s)")
    print(f"total benchmark time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
