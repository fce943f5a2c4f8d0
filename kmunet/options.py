"""Option names and command-line defaults shared by the library and the CLI.

This module imports nothing heavy, so ``kmunet --help`` can list the valid choices without importing
torch; the library modules (:mod:`kmunet.mri`, :mod:`kmunet.inr`) read the same constants from here.
"""

from __future__ import annotations

__all__ = [
    "INR_MODELS",
    "INR_PRIORS",
    "MASK_KINDS",
    "RECON_METHODS",
    "RESAMPLE_METHODS",
    "DEFAULT_ACCELERATION",
    "DEFAULT_CENTER_FRACTION",
    "DEFAULT_MASK_SEED",
    "DC_CG_MU",
    "SCHEDULES",
    "OPTIMIZERS",
]

#: Implicit neural representations built by :func:`kmunet.inr.build_inr`.
INR_MODELS: tuple[str, ...] = ("siren", "fourier", "wire", "kan")
#: Image priors of the INR reconstruction (:func:`kmunet.mri.recon.inr_reconstruct`, ``kmunet recon --prior``).
INR_PRIORS: tuple[str, ...] = ("tv", "log-tv")
#: Undersampling mask kinds of :func:`kmunet.mri.make_mask` and ``kmunet recon --mask``.
MASK_KINDS: tuple[str, ...] = ("random", "equispaced", "poisson")
#: Reconstruction methods of :func:`kmunet.mri.recon.reconstruct` and ``kmunet recon --method``.
RECON_METHODS: tuple[str, ...] = ("inr", "zero-filled", "cs-tv", "cs-l1")
#: Resampling methods of :func:`kmunet.inr.resample.resample_volume` (``"prior"`` is implied by a prior model;
#: ``"prior+inr"`` fuses the prior with a scan-specific INR and needs one too).
RESAMPLE_METHODS: tuple[str, ...] = ("inr", "linear", "bspline", "prior", "prior+inr")
#: Retrospective undersampling defaults: acceleration R, fully sampled centre fraction, mask seed.
DEFAULT_ACCELERATION: float = 4.0
DEFAULT_CENTER_FRACTION: float = 0.08
DEFAULT_MASK_SEED: int = 0
#: Proximity weight ``mu`` of the INR's final multi-coil data-consistency step (``kmunet recon --dc-mu``).
DC_CG_MU: float = 0.05
#: Learning-rate schedules after warm-up (``train.schedule``).
SCHEDULES: tuple[str, ...] = ("cosine", "poly")
#: Optimizers of the segmentation trainer (``train.optimizer``): AdamW, or SGD with Nesterov momentum
#: (nnU-Net's choice, Isensee et al. 2021).
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
