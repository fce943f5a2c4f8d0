"""``kmunet train-resampler``: train the learned resampling prior on a folder of NIfTI volumes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-resampler`` sub-parser."""
    parser = subparsers.add_parser(
        "train-resampler",
        help="train a learned (LIIF/ArSSR-style) resampler for kmunet resample --prior",
        description=(
            "Train a conv-encoder + implicit-decoder resampler on random crops of a folder of NIfTI volumes with "
            "slices dropped along a random axis (factors 2 and 4). Some volumes are held out (deterministic split "
            "by --seed; their names are stored in the checkpoint, with the trained factors and the training volumes' "
            "voxel sizes, which kmunet resample --prior checks its input against). Training is in voxel space; a "
            "note is printed for anisotropic training volumes. The checkpoint loads with torch.load(weights_only=True)."
        ),
    )
    parser.add_argument("--data", required=True, help="folder of .nii/.nii.gz volumes")
    parser.add_argument("--output", required=True, help="checkpoint path (must end in .pt), written atomically")
    parser.add_argument("--epochs", type=int, default=50, help="epochs (default 50)")
    parser.add_argument("--batch-size", type=int, default=4, help="crops per step (default 4)")
    parser.add_argument("--crop", type=int, default=24, help="crop size in voxels (default 24)")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4], help="slice-dropping factors (default 2 4)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--holdout", type=int, default=20, help="volumes held out of training (default 20)")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="split, initialisation and sampling seed")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train (default auto)")
    parser.add_argument("--zoom", type=float, nargs=2, default=[1.0, 1.0], metavar=("LOW", "HIGH"),
                        help="range of a random down-scaling of the crops (coarser scans; default 1 1: off)")
    parser.add_argument("--slice-blur", type=float, default=0.0,
                        help="largest Gaussian sigma (voxels) of a random slice-profile blur (default 0: off)")
    parser.add_argument("--contrast", type=float, default=0.0,
                        help="probability of a random intensity remapping (other contrasts; default 0: off)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide the progress bar (as in the other commands)")
    parser.add_argument("--progress", dest="progress", action="store_true", help=argparse.SUPPRESS)  # the old opt-in flag
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet train-resampler``; returns 0 on success."""
    from kmunet.inr.prior import ResamplerAugment, train_resampler

    output = args.output  # train_resampler checks it before reading any data
    summary = train_resampler(
        args.data, output, epochs=args.epochs, batch_size=args.batch_size, crop=args.crop, factors=args.factors,
        lr=args.lr, holdout=args.holdout, seed=args.seed, device=args.device, time_limit=args.time_limit,
        augment=ResamplerAugment(zoom=tuple(args.zoom), slice_blur=args.slice_blur, contrast=args.contrast),
        progress=args.progress,
    )
    print(f"trained {summary['steps']} steps in {summary['seconds']} s on {len(summary['train'])} volumes "
          f"({len(summary['holdout'])} held out), final loss {summary['final_loss']:.5f} -> {output}")
    return 0
