"""MRI reconstruction: centred FFTs, undersampling masks, coil tools, k-space readers, metrics and recon.

Conventions (used by every function in this package):

* FFTs are centred and orthonormal: ``kspace = fftshift(fftn(ifftshift(image), norm="ortho"))`` over the
  last two axes, so the DC point of k-space sits at index ``(H // 2, W // 2)`` and the image is centred.
* Multi-coil k-space is ``(C, H, W)`` complex64 (coils, phase encoding, readout); single-coil data is
  ``(1, H, W)`` after reading. Images are ``(H, W)``.
* The phase-encoding axis is the second-to-last axis (``-2``) unless an ``axis`` argument says otherwise.
* Masks are boolean ``(H, W)`` arrays, True where k-space was sampled.

The module-level constants below are the package's defaults; they are defined before the submodules are
imported so that every submodule reads them from this one place.
"""

from __future__ import annotations

# Option names and the retrospective undersampling defaults are shared with the CLI (kmunet.options).
from kmunet.options import (  # noqa: E402
    DC_CG_MU,
    DEFAULT_ACCELERATION,
    DEFAULT_CENTER_FRACTION,
    DEFAULT_MASK_SEED,
    INR_PRIORS,
    MASK_KINDS,
    RECON_METHODS,
)
from kmunet.options import INR_MODELS as INR_NAMES  # noqa: E402
#: Side of the square k-space calibration region used for coil sensitivities.
DEFAULT_CALIB_WIDTH: int = 24
#: Default CS regularisation weight (relative to k-space normalised so the zero-filled image peaks at 1)
#: and solver iterations (sigpy's primal-dual TV solver needs about 1000 or more to converge).
DEFAULT_CS_LAMBDA: float = 1e-2
DEFAULT_CS_ITERATIONS: int = 1000
#: Grid of lambdas tried by :func:`kmunet.mri.cs.tune_lambda`.
CS_LAMBDA_GRID: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
#: INR defaults: network width/depth, Adam iterations and learning rate, TV prior weight.
INR_HIDDEN_FEATURES: int = 64
INR_HIDDEN_LAYERS: int = 3
INR_ITERATIONS: int = 300
INR_LR: float = 1e-3
INR_TV_WEIGHT: float = 0.3
#: Edge scale ``eps`` of the log-TV prior ``eps * log(1 + |Dx| / eps)`` (image scaled so the zero-filled
#: magnitude peaks at 1): TV for differences well below it, logarithmic (edges cost less) above. Chosen
#: between 0.05 and 0.1 on validation masks of the twix GRE case (seeds 1 and 2, not the reported seed 0).
INR_LOG_TV_EPS: float = 0.05
#: Grids of TV weights and of SIREN first-layer frequencies (omega_0) tried by :func:`kmunet.mri.recon.tune_inr`.
INR_TV_GRID: tuple[float, ...] = (0.1, 0.3)
INR_OMEGA_GRID: tuple[float, ...] = (15.0, 30.0)
#: Conjugate-gradient iterations of the multi-coil final data-consistency step (its weight ``DC_CG_MU``
#: comes from kmunet.options, which the CLI shares).
DC_CG_ITERATIONS: int = 10
#: Gaussian SSIM window (Wang et al. 2004, as skimage ``gaussian_weights=True``).
SSIM_SIGMA: float = 1.5
SSIM_TRUNCATE: float = 3.5
SSIM_K1: float = 0.01
SSIM_K2: float = 0.03

from kmunet.mri.fft import fftnc, fftnc_torch, ifftnc, ifftnc_torch  # noqa: E402
from kmunet.mri.masks import equispaced_mask, make_mask, poisson_mask, random_mask  # noqa: E402
from kmunet.mri.coils import (  # noqa: E402
    estimate_sensitivities,
    rss,
    sense_adjoint,
    sense_forward,
)
from kmunet.mri.io import KSpaceData, load_image, load_kspace, read_cfl, write_cfl  # noqa: E402
from kmunet.mri.metrics import nmse, psnr, ssim  # noqa: E402

__all__ = [
    "MASK_KINDS", "RECON_METHODS", "INR_NAMES", "INR_PRIORS",
    "fftnc", "ifftnc", "fftnc_torch", "ifftnc_torch",
    "make_mask", "random_mask", "equispaced_mask", "poisson_mask",
    "rss", "estimate_sensitivities", "sense_forward", "sense_adjoint",
    "KSpaceData", "load_kspace", "load_image", "read_cfl", "write_cfl",
    "psnr", "ssim", "nmse",
]
