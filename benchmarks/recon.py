"""Undersampled MRI reconstruction benchmark: zero-filled, CS-TV, CS-L1 and INRs (SIREN, Fourier, WIRE, KAN).

Cases (real data from ``../shared/data``, all measured in one run):

* ``twix GRE``: the Siemens GRE phantom, 2 coils, 160 x 160 after readout-oversampling removal, fully
  sampled; retrospectively undersampled with a 1D random line mask (phase encoding = rows). Coil maps
  are estimated from the undersampled data's fully sampled centre (ESPIRiT when it is >= 12 lines wide,
  else the low-res estimate); the reference is the SENSE coil combination of the fully sampled data
  with maps from the fully sampled data.
* ``DICOM T2``: one slice of ``dicom_mr/Study1`` T2, 2x2 block-averaged to 256 x 256, simulated
  single-coil k-space (magnitude normalised to 1), same masks.
* ``BART brain``: the real 8-coil Poisson-undersampled k-space as given; agreement of magnitudes with
  BART's reference reconstruction (first ESPIRiT set) after a least-squares intensity scaling.

Accelerations 4x (centre fraction 0.08) and 8x (0.04), mask seed 0. CS lambdas are tuned over
``kmunet.mri.CS_LAMBDA_GRID`` against each reference (the chosen one is reported). Every INR runs with
the package defaults (chosen on a FLAIR slice of the same study, not on the reported cases); then, on the
twix and T2 cases, ``--tuned-inr`` (SIREN) runs again with ``--tuned-iterations`` steps and its TV weight
and SIREN's omega_0 tuned over ``kmunet.mri.INR_TV_GRID`` x ``kmunet.mri.INR_OMEGA_GRID`` against the
reference, the same kind of per-case tuning CS gets (``kmunet.mri.recon.tune_inr``); ``--tuned-prior log-tv``
fits that row with the log-TV prior instead of TV, ``--tuned-tv-grid`` sets its prior weights and
``--tuned-dc-mu`` its final data-consistency weight (``--acceleration 8`` runs one acceleration only).

Run: ``OMP_NUM_THREADS=1 python benchmarks/recon.py [--quick] [--data ../shared/data]``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kmunet.mri import (CS_LAMBDA_GRID, DC_CG_MU, INR_ITERATIONS, INR_LR, INR_NAMES, INR_OMEGA_GRID, INR_PRIORS, INR_TV_GRID,
                        INR_TV_WEIGHT, make_mask)
from kmunet.mri.coils import estimate_sensitivities
from kmunet.mri.cs import fit_intensity, tune_lambda
from kmunet.mri.io import KSpaceData, bart_to_coil_first, kspace_from_image, load_image, load_kspace, read_cfl
from kmunet.mri.metrics import all_metrics
from kmunet.mri.recon import INR_MODEL_LR, reconstruct, reference_image, tune_inr

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ((4.0, 0.08), (8.0, 0.04))
MASK_SEED = 0
T2_SERIES = "dicom_mr/Study1/37916-T2reg-88910"


def twix_case(data: Path) -> tuple[KSpaceData, np.ndarray]:
    """The fully sampled twix GRE k-space and its reference (SENSE combination with full-data maps)."""
    full = load_kspace(data / "kspace" / "twix_gre" / "gre.dat")
    return full, reference_image(full, estimate_sensitivities(full.kspace))


def t2_case(data: Path) -> KSpaceData:
    """Single-coil k-space simulated from slice 11 of the DICOM T2 series, 2x2 block-averaged (256 x 256)."""
    img, _ = load_image(data / T2_SERIES, 11)
    h, w = img.shape
    img = img[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean((1, 3))  # (H/2, W/2) block mean
    return kspace_from_image(img, source=T2_SERIES)


def _row(name: str, ref: np.ndarray, image: np.ndarray, seconds: float, note: str = "", scaled: bool = False) -> dict[str, Any]:
    mag = fit_intensity(ref, image) if scaled else np.abs(image).astype(np.float64)
    return {"method": name, **all_metrics(ref, mag), "seconds": seconds, "note": note}


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n#### {title}\n")
    print("| method | PSNR (dB) | SSIM | NMSE | seconds | note |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['nmse']:.4f} | {r['seconds']:.1f} | {r['note']} |")
    inr = [r for r in rows if r["method"].startswith("INR")]
    cs = [r for r in rows if r["method"].startswith("CS")]
    if inr and cs:
        bi, bc = max(inr, key=lambda r: r["psnr"]), max(cs, key=lambda r: r["psnr"])
        print(f"\nbest INR {bi['method']} {bi['psnr']:.2f} dB vs best CS {bc['method']} {bc['psnr']:.2f} dB: "
              f"{bi['psnr'] - bc['psnr']:+.2f} dB")
    sys.stdout.flush()


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_case(name: str, kspace: np.ndarray, reference: np.ndarray, mask: np.ndarray, inrs: list[str],
             iterations: int, cs_grid: tuple[float, ...], cs_iterations: dict[str, int], scaled: bool = False,
             tuned: tuple[str, int, tuple[float, ...], tuple[float, ...], str, float] | None = None) -> list[dict[str, Any]]:
    """All methods on one undersampled k-space; returns the table rows.

    ``tuned = (inr, iterations, tv_grid, omega_grid, prior, dc_mu)`` adds one more INR row: that many steps
    with that image prior and final data-consistency weight, the prior's weight (and SIREN's omega_0)
    tuned over the grids against the reference; its seconds are the mean of one fit.
    """
    rows = []
    (sens, t_sens) = _timed(lambda: estimate_sensitivities(kspace * mask))
    zf = reconstruct(kspace, mask, method="zero-filled", sens=sens)
    rows.append(_row("zero-filled", reference, zf.image, zf.seconds + t_sens, scaled=scaled))
    for method, label in (("cs-tv", "CS-TV"), ("cs-l1", "CS-L1")):
        its = cs_iterations[method]
        (lam, img, scores), secs = _timed(lambda: tune_lambda(kspace, mask, reference, sens, method, cs_grid, its, fit_scale=scaled))
        one = reconstruct(kspace, mask, method=method, lam=lam, iterations=its, sens=sens)
        rows.append(_row(label, reference, one.image, one.seconds + t_sens,
                         f"{its} its, lambda {lam:g} (grid {len(cs_grid)} values, tuning {secs:.0f} s)", scaled))
    for inr in inrs:
        res = reconstruct(kspace, mask, method="inr", inr=inr, iterations=iterations, sens=sens, device="cpu", seed=0)
        rows.append(_row(f"INR {inr}", reference, res.image, res.seconds + t_sens,
                         f"{res.info['iterations']} its, tv {res.info['tv_weight']:g}, {res.info['parameters']} params, "
                         f"DC {res.info['data_consistency']}", scaled))
    if tuned is not None:
        inr, its, tv_grid, omega_grid, prior, dc_mu = tuned
        ((tv, omega), img, scores), secs = _timed(lambda: tune_inr(
            kspace, mask, reference, sens, inr, tv_grid, omega_grid if inr == "siren" else None, its,
            fit_scale=scaled, device="cpu", seed=0, prior=prior, dc_mu=dc_mu))
        label = lambda t, w: f"{t:g}" if w is None else f"{t:g}/{w:g}"  # noqa: E731
        tried = ", ".join(f"{label(*k)}: {v:.2f}" for k, v in scores.items())
        what = "tv" if omega is None else "tv/omega_0"
        rows.append(_row(f"INR {inr} tuned", reference, img, secs / len(scores) + t_sens,
                         f"{its} its, prior {prior}, DC mu {dc_mu:g}, {what} {label(tv, omega)} (grid {{{tried}}} dB, "
                         f"tuning {secs:.0f} s)",
                         scaled))
    _print_table(name, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"), help="shared data folder")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4x only, few iterations, small grid")
    parser.add_argument("--inr", nargs="+", default=list(INR_NAMES), choices=INR_NAMES, help="INRs to run")
    parser.add_argument("--iterations", type=int, default=None, help="INR iterations (default package default)")
    parser.add_argument("--cases", nargs="+", default=["twix", "dicom", "bart"], choices=["twix", "dicom", "bart"])
    parser.add_argument("--acceleration", type=float, nargs="+", default=None, choices=[r for r, _ in SETTINGS],
                        help="only these accelerations of the twix and T2 cases (default: all)")
    parser.add_argument("--tv-iterations", type=int, default=2000, help="CS-TV iterations (primal-dual converges slowly)")
    parser.add_argument("--l1-iterations", type=int, default=300, help="CS-L1 iterations")
    parser.add_argument("--tuned-inr", default="siren", choices=[*INR_NAMES, "none"],
                        help="INR rerun with more steps and tuned TV weight / omega_0 (twix and T2 cases; none: skip)")
    parser.add_argument("--tuned-iterations", type=int, default=2000, help="steps of the tuned INR")
    parser.add_argument("--tuned-prior", default="tv", choices=INR_PRIORS, help="image prior of the tuned INR (default tv)")
    parser.add_argument("--tuned-dc-mu", type=float, default=DC_CG_MU,
                        help=f"final data-consistency weight of the tuned INR (multi coil; default {DC_CG_MU:g})")
    parser.add_argument("--tuned-tv-grid", type=float, nargs="+", default=list(INR_TV_GRID),
                        help=f"prior weights the tuned INR tries (default {list(INR_TV_GRID)})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data)
    iterations = args.iterations or (20 if args.quick else INR_ITERATIONS)
    settings = SETTINGS[:1] if args.quick else SETTINGS
    if args.acceleration:
        settings = tuple((r, cf) for r, cf in settings if r in args.acceleration)
    cs_grid = CS_LAMBDA_GRID[::2] if args.quick else CS_LAMBDA_GRID
    cs_iterations = {"cs-tv": 20, "cs-l1": 20} if args.quick else {"cs-tv": args.tv_iterations, "cs-l1": args.l1_iterations}
    tuned = None if args.tuned_inr == "none" else (
        args.tuned_inr, 20 if args.quick else args.tuned_iterations,
        tuple(args.tuned_tv_grid[:1] if args.quick else args.tuned_tv_grid), INR_OMEGA_GRID[:1] if args.quick else INR_OMEGA_GRID,
        args.tuned_prior, args.tuned_dc_mu)
    print(f"# kmunet MRI reconstruction benchmark ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)")
    print(f"\ntorch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, "
          f"INR iterations {iterations}, INR TV weight {INR_TV_WEIGHT:g}, INR lr {INR_LR:g} (overrides {INR_MODEL_LR}), CS iterations {cs_iterations}, "
          f"lambda grid {list(cs_grid)}, mask: 1D random, seed {MASK_SEED}, tuned INR {tuned}")
    t_start = time.perf_counter()
    summary: list[tuple[str, float, float, float]] = []
    margins: dict[str, list[float]] = {}

    def note(case: str, rows: list[dict[str, Any]]) -> None:
        inr = {r["method"][4:]: r["psnr"] for r in rows if r["method"].startswith("INR") and not r["method"].endswith("tuned")}
        tuned_psnr = max((r["psnr"] for r in rows if r["method"].endswith("tuned")), default=float("nan"))
        cs = [r["psnr"] for r in rows if r["method"].startswith("CS")]
        if inr and cs:
            summary.append((case, max(inr.values()), tuned_psnr, max(cs)))
            for k, v in inr.items():
                margins.setdefault(k, []).append(v - max(cs))

    if "twix" in args.cases:
        full, ref = twix_case(data)
        for accel, cf in settings:
            mask = make_mask("random", full.shape, accel, cf, seed=MASK_SEED)
            name = f"twix GRE phantom, 2 coils {full.shape[0]}x{full.shape[1]}, R={accel:g} (cf {cf}, {mask.mean():.1%} sampled)"
            note(f"twix R={accel:g}", run_case(name, full.kspace, ref, mask, args.inr, iterations, cs_grid, cs_iterations,
                                                       tuned=tuned))
    if "dicom" in args.cases:
        sim = t2_case(data)
        for accel, cf in settings:
            mask = make_mask("random", sim.shape, accel, cf, seed=MASK_SEED)
            name = f"DICOM T2 slice 11, simulated single coil {sim.shape[0]}x{sim.shape[1]}, R={accel:g} (cf {cf}, {mask.mean():.1%} sampled)"
            note(f"T2 R={accel:g}", run_case(name, sim.kspace, sim.reference, mask, args.inr, iterations, cs_grid,
                                                     cs_iterations, tuned=tuned))
    if "bart" in args.cases:
        bdir = data / "kspace" / "bart_pics_brain"
        ksp = load_kspace(bdir / "ksp.cfl")
        ref = np.abs(bart_to_coil_first(read_cfl(bdir / "img"), "img")[0])
        # the INR with the best mean PSNR margin over CS on the cases above (all listed INRs if none ran)
        best = [max(margins, key=lambda k: float(np.mean(margins[k])))] if margins else args.inr
        if margins:
            print(f"\nbest INR on the cases above (mean PSNR margin over best CS): {best[0]}")
        name = (f"BART brain, real 8-coil Poisson-undersampled {ksp.shape[0]}x{ksp.shape[1]} ({ksp.mask.mean():.1%} sampled), "
                "agreement with BART pics reference (LS-scaled magnitudes)")
        note("BART brain", run_case(name, ksp.kspace, ref, ksp.mask, best, iterations, cs_grid, cs_iterations, scaled=True))
    print("\n#### Summary: best INR vs best CS (PSNR)\n")
    print("| case | best INR, defaults (dB) | tuned INR (dB) | best CS (dB) | best INR - best CS (dB) | >= 1 dB |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for case, i, t, c in summary:
        best = max(i, t) if np.isfinite(t) else i
        tuned_text = f"{t:.2f}" if np.isfinite(t) else "-"
        print(f"| {case} | {i:.2f} | {tuned_text} | {c:.2f} | {best - c:+.2f} | {'yes' if best - c >= 1 else 'no'} |")
    print(f"\ntotal time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
