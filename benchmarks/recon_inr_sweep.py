"""INR reconstruction settings sweep: SIREN iterations x TV weight on the cases of ``benchmarks/recon.py``.

Same data, masks (1D random, seed 0; R = 4 with centre fraction 0.08, R = 8 with 0.04), coil maps and
references as ``benchmarks/recon.py``; prints the PSNR of the magnitude and the seconds of each fit. It
measures how far the INR gets with a larger step budget and a TV weight chosen per case against the
reference (the same per-case tuning the CS baselines get in ``benchmarks/recon.py``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/recon_inr_sweep.py twix`` (or ``t2``); ``--settings 4000:0.1``
replaces the case's grid, ``--acceleration 8`` keeps one setting, ``--omega 15`` changes SIREN's first-layer
frequency (package default 30).

Diagnostics of a case the INR does not win (twix R = 8): ``--seeds 0 1 2 3`` fits each setting once per
initialisation seed and adds a row for the mean of those fits (a deep ensemble); ``--maps full`` uses coil
maps estimated from the *fully sampled* k-space (an oracle no real scan has) instead of the undersampled
data's calibration lines, to measure how much of the error the coil maps cause; ``--cs-lambda 0.03`` adds a
CS-TV row with the same maps for comparison; ``--dc-mu 0.05 0.5`` scores each fit after the final
multi-coil data-consistency step at every given ``mu`` and without it (one fit, several steps:
``kmunet.mri.recon.data_consistency``; default: the package's ``mu`` alone).

Priors: ``--prior log-tv`` fits with the log-TV prior (``--prior-eps`` its edge scale, default the package's);
``--mask-seed 1`` draws another mask of the same kind (a validation mask for choosing settings that are not
tuned per case: the reported cases use seed 0); ``--cs-iterations`` sets the CS-TV rows' solver iterations;
``--no-inr`` prints only the CS-TV rows (a finer lambda grid than ``benchmarks/recon.py``'s).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from recon import MASK_SEED, ROOT, SETTINGS, t2_case, twix_case  # benchmarks/recon.py, beside this script

from kmunet.mri import INR_LOG_TV_EPS, INR_PRIORS, make_mask
from kmunet.mri.coils import estimate_sensitivities
from kmunet.mri.cs import cs_reconstruct
from kmunet.mri.metrics import all_metrics
from kmunet.mri.recon import data_consistency, inr_reconstruct

#: (iterations, TV weight) pairs per case; a 1000-step fit of the 256 x 256 T2 slice takes about 4 minutes.
GRIDS = {
    "twix": ((1000, 0.1), (1000, 0.03), (2000, 0.1), (2000, 0.03)),
    "t2": ((1000, 0.1), (1000, 0.03), (1000, 0.3)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=sorted(GRIDS), help="twix GRE (2 coils) or the simulated DICOM T2 slice")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"), help="shared data folder")
    parser.add_argument("--settings", nargs="+", default=None, metavar="ITS:TV",
                        help="iterations:TV-weight pairs (default: the case's grid)")
    parser.add_argument("--acceleration", type=float, nargs="+", default=None, choices=[r for r, _ in SETTINGS],
                        help="only these accelerations (default: all)")
    parser.add_argument("--omega", type=float, nargs="+", default=[None], help="SIREN omega_0 values (default: the package's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="initialisation seeds; with several, a row for the mean image of the fits is added")
    parser.add_argument("--maps", choices=("undersampled", "full"), default="undersampled",
                        help="estimate coil maps from the undersampled data (as a real scan) or from the full k-space (oracle)")
    parser.add_argument("--cs-lambda", type=float, nargs="*", default=[],
                        help="CS-TV lambdas to add as rows (2000 iterations, same maps)")
    parser.add_argument("--dc-mu", type=float, nargs="+", default=None,
                        help="score every fit with the final data-consistency step at each of these mu, and without it "
                             "(default: the package's mu only)")
    parser.add_argument("--prior", choices=INR_PRIORS, default="tv", help="INR image prior (default tv)")
    parser.add_argument("--prior-eps", type=float, default=INR_LOG_TV_EPS,
                        help=f"edge scale of the log-TV prior (default {INR_LOG_TV_EPS:g})")
    parser.add_argument("--mask-seed", type=int, default=MASK_SEED, help=f"mask seed (default {MASK_SEED}, the reported one)")
    parser.add_argument("--cs-iterations", type=int, default=2000, help="CS-TV solver iterations (default 2000)")
    parser.add_argument("--no-inr", action="store_true", help="only the --cs-lambda rows")
    args = parser.parse_args(argv)
    try:
        grid = [(int(a), float(b)) for a, b in (x.split(":") for x in args.settings)] if args.settings else GRIDS[args.case]
    except ValueError:
        parser.error(f"--settings takes ITS:TV pairs such as 2000:0.1, got {args.settings}")
    if args.dc_mu is not None and len(args.seeds) > 1:
        parser.error("--dc-mu scores one fit at several strengths; use it with one --seeds value")
    torch.set_num_threads(1)
    data = Path(args.data)
    if args.case == "twix":
        full, reference = twix_case(data)
        kspace, shape = full.kspace, full.shape
    else:
        sim = t2_case(data)
        kspace, shape, reference = sim.kspace, sim.shape, sim.reference
    print(f"mask seed {args.mask_seed}, prior {args.prior}" + (f" (eps {args.prior_eps:g})" if args.prior == "log-tv" else ""))
    print("| case | R | maps | method | iterations | TV weight | omega_0 | seed | PSNR (dB) | seconds |\n"
          "| --- | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")

    def row(accel: float, method: str, its: object, tv: object, omega: object, seed: object, image: np.ndarray, secs: float) -> None:
        score = all_metrics(reference, np.abs(image))["psnr"]
        print(f"| {args.case} | {accel:g} | {args.maps} | {method} | {its} | {tv} | {omega} | {seed} | {score:.2f} | {secs:.0f} |",
              flush=True)

    for accel, cf in SETTINGS:
        if args.acceleration and accel not in args.acceleration:
            continue
        mask = make_mask("random", shape, accel, cf, seed=args.mask_seed)
        sens = estimate_sensitivities(kspace if args.maps == "full" else kspace * mask)
        for lam in args.cs_lambda:
            t0 = time.perf_counter()
            image = cs_reconstruct(kspace * mask, mask, sens, method="cs-tv", lam=lam, iterations=args.cs_iterations)
            row(accel, "CS-TV", args.cs_iterations, f"lambda {lam:g}", "-", "-", image, time.perf_counter() - t0)
        prior = {"prior": args.prior, "prior_eps": args.prior_eps}
        for (iterations, tv), omega in itertools.product([] if args.no_inr else grid, args.omega):
            images = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                if args.dc_mu is None:
                    image, _ = inr_reconstruct(kspace, mask, sens, "siren", iterations=iterations, tv_weight=tv,
                                               omega_0=omega, seed=seed, **prior)
                    row(accel, "SIREN", iterations, f"{tv:g}", omega or "default", seed, image, time.perf_counter() - t0)
                else:  # one fit, then each data-consistency strength (and none)
                    raw, _ = inr_reconstruct(kspace, mask, sens, "siren", iterations=iterations, tv_weight=tv,
                                             omega_0=omega, seed=seed, final_dc=False, **prior)
                    secs = time.perf_counter() - t0
                    row(accel, "SIREN, no final DC", iterations, f"{tv:g}", omega or "default", seed, raw, secs)
                    for mu in args.dc_mu:
                        image, dc = data_consistency(raw, kspace, mask, sens, mu=mu)
                        row(accel, f"SIREN, DC {dc}", iterations, f"{tv:g}", omega or "default", seed, image, secs)
                images.append(image)
            if len(images) > 1:
                row(accel, f"SIREN, mean of {len(images)} seeds", iterations, f"{tv:g}", omega or "default",
                    "all", np.mean(images, axis=0), 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
