"""Training: Dice + CE loop with AMP, DDP, resume, atomic checkpoints, TensorBoard/CSV logs."""

from kmunet.training.checkpoint import load_checkpoint, model_from_checkpoint, models_from_checkpoints, save_checkpoint
from kmunet.training.evaluation import evaluate_checkpoint
from kmunet.training.schedule import amp_settings, lr_factor
from kmunet.training.trainer import TrainResult, evaluate, train

__all__ = [
    "TrainResult",
    "amp_settings",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "lr_factor",
    "model_from_checkpoint",
    "models_from_checkpoints",
    "save_checkpoint",
    "train",
]
