"""``kmunet train``: train KM-UNet (or the MONAI UNet baseline) from a YAML config."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a segmentation network from a YAML config (torchrun-aware)",
        description=(
            "Train KM-UNet or the MONAI UNet baseline. --set overrides any key of the YAML; the flags "
            "--data/--output/--epochs/--device/--init-from win over both (taken as given, not parsed as YAML). "
            "Multi-GPU / multi-node: torchrun --nproc_per_node N -m kmunet train ..."
        ),
    )
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--data", default=None, help="dataset folder (overrides data.root)")
    parser.add_argument("--output", default=None, help="output folder (overrides train.output_dir)")
    parser.add_argument("--epochs", type=int, default=None, help="overrides train.epochs")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="overrides train.device")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="fine-tune: start from this checkpoint's weights (overrides train.init_from)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.lr=0.001 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (epoch summaries only; for log files)")
    parser.set_defaults(func=run)


#: ``kmunet train`` flags and the config keys they set (after the YAML and every ``--set``).
FLAG_KEYS = {
    "data": "data.root",
    "output": "train.output_dir",
    "epochs": "train.epochs",
    "device": "train.device",
    "init_from": "train.init_from",
}


def run(args: argparse.Namespace) -> int:
    from kmunet.config import load_config, replace_values
    from kmunet.training import train
    from kmunet.training.trainer import distributed_env

    config = load_config(args.config, args.overrides)
    # typed values, not YAML: "--output '/tmp/exp #1'", "--init-from ~" or "--data 2024" stay the strings
    # given; a flag on the command line wins over the YAML and over --set
    flags = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None}
    config = replace_values(config, flags)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    if distributed_env()[0] != 0:  # under torchrun only rank 0 reports (it has the metrics)
        return 0
    if result.best_epoch > 0:
        dice = ", ".join(f"{k} {v:.4f}" for k, v in result.dice_per_class.items())
        print(f"best validation score {result.best_metric:.4f} at epoch {result.best_epoch} ({dice}); "
              f"checkpoint {result.best_checkpoint}")
    elif result.last_checkpoint.is_file():
        print(f"no validation score (no validation cases, or no validation epoch yet); the model is "
              f"{result.last_checkpoint}")
    return 0
