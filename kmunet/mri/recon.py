"""Undersampled MRI reconstruction: INR fitted through the SENSE forward model, plus baselines.

INR reconstruction (``method="inr"``): a coordinate network ``f`` (``kmunet.inr.build_inr``) maps the image
grid coordinates in ``[-1, 1]^2`` to a complex image ``x = f(coords)`` (``(H, W)``). Its weights are fitted
with Adam to minimise::

    ||M F(S x) - y||^2 / ||y||^2  +  tv_weight * R(x)

(``y`` the measured k-space divided by the zero-filled image peak, so the data term starts at O(1)) with
the image prior ``R`` (``prior``):

* ``"tv"``: anisotropic total variation ``mean |D_h x| + mean |D_w x|`` (Rudin, Osher, Fatemi 1992);
* ``"log-tv"``: ``mean eps log(1 + |D_h x| / eps) + mean eps log(1 + |D_w x| / eps)``, the log penalty of
  reweighted l1 minimisation (Candes, Wakin, Boyd, "Enhancing sparsity by reweighted l1 minimization",
  J Fourier Anal Appl 2008) on image differences. It equals TV on differences well below ``eps``
  (``INR_LOG_TV_EPS``) and grows only logarithmically above, so strong edges are penalised less and the
  prior favours piecewise-constant images more than TV does. Non-convex, which costs a gradient-based INR
  fit nothing (its objective is non-convex in the network weights anyway).
A final data-consistency step follows:

* single coil: measured k-space points replace the network's at sampled positions (exact DC);
* multi coil: ``DC_CG_ITERATIONS`` conjugate-gradient steps on
  ``(A^H A + mu I) x = A^H y + mu x_inr`` started from ``x_inr`` (``mu = DC_CG_MU`` unless ``dc_mu``
  says otherwise), i.e. the image closest to the network output that (nearly) agrees with the measured
  samples of every coil. Smaller ``mu`` trusts the samples more (and amplifies their noise more).

:func:`data_consistency` is that step on its own, so one fit (``inr_reconstruct(..., final_dc=False)``)
can be followed by several strengths.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kmunet.checks import check_int, check_positive
from kmunet.mri import (
    DC_CG_ITERATIONS,
    DC_CG_MU,
    DEFAULT_CS_ITERATIONS,
    DEFAULT_CS_LAMBDA,
    INR_HIDDEN_FEATURES,
    INR_HIDDEN_LAYERS,
    INR_ITERATIONS,
    INR_LOG_TV_EPS,
    INR_LR,
    INR_NAMES,
    INR_PRIORS,
    INR_OMEGA_GRID,
    INR_TV_GRID,
    INR_TV_WEIGHT,
    RECON_METHODS,
)
from kmunet.mri.coils import estimate_sensitivities, sense_adjoint, sense_forward
from kmunet.mri.cs import cs_reconstruct, fit_intensity, kspace_scale, zero_filled
from kmunet.mri.fft import fftnc_torch, ifftnc_torch
from kmunet.mri.io import KSpaceData
from kmunet.mri.metrics import best_on_grid, psnr

#: Per-model INR options (passed to ``build_inr``). Sizes keep one 160 x 160 fit under a minute on one CPU
#: thread; the TV weight and iterations were chosen on a FLAIR slice (not on the benchmark's cases).
INR_MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "siren": {"omega_0": 30.0},
    "fourier": {"sigma": 5.0, "num_frequencies": 128},
    "wire": {},
    "kan": {"grid_size": 5},
}
#: Hidden width/depth overrides per model (KAN layers are ``1 + G + k`` times wider than an MLP layer; WIRE's
#: complex Gabor activations are the most expensive per unit).
INR_WIDTH: dict[str, int] = {"kan": 16, "wire": 32}
INR_DEPTH: dict[str, int] = {"kan": 1, "wire": 2}
#: Adam learning-rate overrides per model (default ``INR_LR``); WIRE and KAN barely move at 1e-3.
INR_MODEL_LR: dict[str, float] = {"wire": 1e-2, "kan": 1e-2}


@dataclasses.dataclass
class ReconResult:
    """Output of :func:`reconstruct`.

    Attributes:
        image: complex64 ``(H, W)`` reconstruction (scale of the input k-space).
        seconds: wall-clock time of :func:`reconstruct`, including the sensitivity estimation when it
            estimated them (``sens=None``; ``info["seconds_sensitivities"]`` is that part). Maps passed in
            were estimated by the caller, outside this time: ``kmunet recon`` adds its own estimation to
            the ``seconds`` it reports.
        info: method, parameters and diagnostics (JSON-friendly).
    """

    image: np.ndarray
    seconds: float
    info: dict[str, Any]

    @property
    def magnitude(self) -> np.ndarray:
        """float32 ``(H, W)`` magnitude."""
        return np.abs(self.image).astype(np.float32)


def image_grid(shape: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixel-centre coordinates of an ``(H, W)`` grid in ``[-1, 1]^2``, shape ``(H, W, 2)`` (row, col)."""
    h, w = shape
    ys = torch.linspace(-1.0, 1.0, h, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def _abs_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``|x[i+1,j]-x[i,j]|`` ``(H-1, W)`` and ``|x[i,j+1]-x[i,j]|`` ``(H, W-1)`` of a (complex) ``(H, W)`` image."""
    return torch.abs(x[1:, :] - x[:-1, :]), torch.abs(x[:, 1:] - x[:, :-1])


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV ``mean |x[i+1,j]-x[i,j]| + mean |x[i,j+1]-x[i,j]|`` of a (complex) ``(H, W)`` image."""
    dh, dw = _abs_differences(x)
    return torch.mean(dh) + torch.mean(dw)


def log_total_variation(x: torch.Tensor, eps: float = INR_LOG_TV_EPS) -> torch.Tensor:
    """Log-TV ``mean eps log(1 + |x[i+1,j]-x[i,j]| / eps) + mean eps log(1 + |x[i,j+1]-x[i,j]| / eps)``.

    The log penalty of Candes, Wakin and Boyd (2008) on the differences of a (complex) ``(H, W)`` image
    (see the module docstring); ``eps -> inf`` gives :func:`total_variation`.
    """
    dh, dw = _abs_differences(x)
    return torch.mean(eps * torch.log1p(dh / eps)) + torch.mean(eps * torch.log1p(dw / eps))


def _prior_function(prior: str, eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``R`` for a prior name of :data:`kmunet.mri.INR_PRIORS` (resolved once, outside the fitting loop)."""
    if prior not in INR_PRIORS:
        raise ValueError(f"unknown prior {prior!r}; valid: {list(INR_PRIORS)}")
    return total_variation if prior == "tv" else functools.partial(log_total_variation, eps=eps)


def image_prior(x: torch.Tensor, prior: str = "tv", eps: float = INR_LOG_TV_EPS) -> torch.Tensor:
    """The INR reconstruction's image prior ``R(x)`` by name (:data:`kmunet.mri.INR_PRIORS`)."""
    return _prior_function(prior, eps)(x)


def _cg_data_consistency(x0: torch.Tensor, y: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor,
                         mu: float, iterations: int) -> torch.Tensor:
    """Solve ``(A^H A + mu I) x = A^H y + mu x0`` by CG from ``x0``."""
    def normal(v: torch.Tensor) -> torch.Tensor:
        return sense_adjoint(sense_forward(v, sens, mask), sens, None) + mu * v

    b = sense_adjoint(y, sens, mask) + mu * x0
    x = x0.clone()
    r = b - normal(x)
    p = r.clone()
    rs = torch.sum(torch.abs(r) ** 2).real
    for _ in range(iterations):
        if rs <= 1e-20:
            break
        ap = normal(p)
        alpha = rs / torch.sum(torch.conj(p) * ap).real
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = torch.sum(torch.abs(r) ** 2).real
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def data_consistency(
    image: np.ndarray,
    kspace: np.ndarray,
    mask: np.ndarray,
    sens: np.ndarray,
    mu: float = DC_CG_MU,
    iterations: int = DC_CG_ITERATIONS,
) -> tuple[np.ndarray, str]:
    """The final data-consistency step of :func:`inr_reconstruct` (see the module docstring).

    Args:
        image: complex ``(H, W)`` estimate (e.g. the network output, in the scale of ``kspace``).
        kspace: ``(C, H, W)`` k-space (unsampled points are ignored).
        mask: boolean ``(H, W)`` sampling mask.
        sens: ``(C, H, W)`` sensitivities (all ones for single coil).
        mu: weight of the estimate against the samples (multi coil; > 0).
        iterations: conjugate-gradient steps (multi coil; >= 1).

    Returns:
        ``(image, description)``: complex64 ``(H, W)`` image and ``"replace"`` (single coil: the measured
        samples replace the estimate's) or ``"cg{iterations}(mu={mu})"``.

    Raises:
        ValueError: shapes that do not match, ``mu`` not a positive finite number or ``iterations < 1``.
    """
    mu = check_positive("data-consistency mu", mu)
    iterations = check_int("data-consistency iterations", iterations)
    kspace = np.asarray(kspace)
    if kspace.ndim != 3 or np.shape(sens) != kspace.shape or np.shape(mask) != kspace.shape[1:] \
            or np.shape(image) != kspace.shape[1:]:
        raise ValueError(f"data_consistency needs image (H, W), kspace and sens (C, H, W), mask (H, W); got image "
                         f"{list(np.shape(image))}, kspace {list(kspace.shape)}, sens {list(np.shape(sens))}, "
                         f"mask {list(np.shape(mask))}")
    x = torch.from_numpy(np.asarray(image, dtype=np.complex64))
    m = torch.from_numpy(np.asarray(mask, dtype=bool))
    y = torch.from_numpy((kspace * mask).astype(np.complex64))
    s = torch.from_numpy(np.asarray(sens, dtype=np.complex64))
    with torch.no_grad():
        out, dc = _data_consistency(x, y, s, m, mu, iterations)
    return out.numpy().astype(np.complex64), dc


def _data_consistency(x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, m: torch.Tensor, mu: float,
                      iterations: int) -> tuple[torch.Tensor, str]:
    """:func:`data_consistency` on tensors (``y`` the masked k-space)."""
    if s.shape[0] == 1:
        k = fftnc_torch(s[0] * x)
        return ifftnc_torch(torch.where(m, y[0], k)) / torch.where(s[0].abs() > 0, s[0], torch.ones_like(s[0])), "replace"
    return _cg_data_consistency(x, y, s, m, mu, iterations), f"cg{iterations}(mu={mu:g})"


def inr_reconstruct(
    kspace: np.ndarray,
    mask: np.ndarray,
    sens: np.ndarray,
    inr: str = "siren",
    iterations: int = INR_ITERATIONS,
    lr: float = INR_LR,
    tv_weight: float = INR_TV_WEIGHT,
    hidden_features: int | None = None,
    hidden_layers: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    omega_0: float | None = None,
    dc_mu: float = DC_CG_MU,
    final_dc: bool = True,
    prior: str = "tv",
    prior_eps: float = INR_LOG_TV_EPS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit an INR to undersampled k-space (see module docstring).

    Args:
        kspace: ``(C, H, W)`` k-space.
        mask: boolean ``(H, W)`` sampling mask.
        sens: ``(C, H, W)`` sensitivities (all ones for single coil).
        inr: network name (``kmunet.mri.INR_NAMES``).
        iterations: Adam steps.
        lr: Adam learning rate (cosine-decayed to 5% over the run).
        tv_weight: weight of the image prior (0 disables it).
        hidden_features, hidden_layers: network size (default per model).
        device: torch device.
        seed: network initialisation seed.
        progress: show a tqdm bar with the loss.
        model_kwargs: extra ``build_inr`` options (override :data:`INR_MODEL_KWARGS`).
        omega_0: SIREN's first-layer frequency (``None``: :data:`INR_MODEL_KWARGS`'s); SIREN only.
        dc_mu: ``mu`` of the final multi-coil data-consistency step (:func:`data_consistency`).
        final_dc: apply that step (``False``: return the network's own image).
        prior: image prior, ``"tv"`` or ``"log-tv"`` (module docstring).
        prior_eps: edge scale ``eps`` of the log-TV prior (> 0; unused by TV).

    Returns:
        ``(image, info)``: complex64 ``(H, W)`` image and diagnostics.
    """
    from kmunet.inr import build_inr

    if inr not in INR_NAMES:
        raise ValueError(f"unknown INR {inr!r}; valid: {list(INR_NAMES)}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not tv_weight >= 0:
        raise ValueError(f"tv_weight must be >= 0, got {tv_weight}")
    if omega_0 is not None and inr != "siren":
        raise ValueError(f"omega_0 applies to SIREN only, not {inr!r}")
    prior_eps = check_positive("prior_eps", prior_eps)
    prior_fn = _prior_function(prior, prior_eps)  # checks the name before the fit, even with tv_weight 0
    dc_mu = check_positive("dc_mu", dc_mu)
    sampled = np.asarray(kspace) * mask
    if not np.any(sampled):
        raise ValueError("the sampled k-space is all zero: nothing for an INR to fit")
    device = torch.device(device)
    scale = kspace_scale(kspace, mask)
    y = torch.from_numpy((sampled / scale).astype(np.complex64)).to(device)
    m = torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)
    s = torch.from_numpy(np.asarray(sens, dtype=np.complex64)).to(device)
    y_energy = torch.sum(torch.abs(y) ** 2).clamp_min(1e-20)
    shape = tuple(kspace.shape[-2:])
    coords = image_grid(shape, device)
    kwargs = dict(INR_MODEL_KWARGS.get(inr, {}))
    kwargs.update(model_kwargs or {})
    if omega_0 is not None:
        kwargs["omega_0"] = float(omega_0)
    model = build_inr(inr, 2, 1, hidden_features=int(hidden_features or INR_WIDTH.get(inr, INR_HIDDEN_FEATURES)),
                      hidden_layers=int(hidden_layers if hidden_layers is not None else INR_DEPTH.get(inr, INR_HIDDEN_LAYERS)),
                      complex_output=True, seed=seed, **kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i / iterations, 1.0))))
    steps = range(int(iterations))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(steps, desc=f"inr-{inr}", leave=False)
        steps = bar
    loss_value = float("nan")
    for _ in steps:
        opt.zero_grad(set_to_none=True)
        x = model(coords)[..., 0]
        loss = torch.sum(torch.abs(sense_forward(x, s, m) - y) ** 2) / y_energy
        if tv_weight > 0:
            loss = loss + tv_weight * prior_fn(x)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.4g}")
    if bar is not None:
        bar.close()
    with torch.no_grad():
        x = model(coords)[..., 0].to(torch.complex64)
        x, dc = _data_consistency(x, y, s, m, float(dc_mu), DC_CG_ITERATIONS) if final_dc else (x, "none")
    info = {"inr": inr, "iterations": int(iterations), "lr": float(lr), "tv_weight": float(tv_weight), "prior": prior,
            **({"prior_eps": prior_eps} if prior == "log-tv" else {}),
            "final_loss": loss_value, "data_consistency": dc, "scale": scale,
            "parameters": int(sum(p.numel() for p in model.parameters()))}
    return (x.cpu().numpy() * scale).astype(np.complex64), info


def tune_inr(
    kspace: np.ndarray,
    mask: np.ndarray,
    reference: np.ndarray,
    sens: np.ndarray,
    inr: str = "siren",
    tv_grid: Sequence[float] = INR_TV_GRID,
    omega_grid: Sequence[float] | None = INR_OMEGA_GRID,
    iterations: int = INR_ITERATIONS,
    fit_scale: bool = False,
    **options: Any,
) -> tuple[tuple[float, float | None], np.ndarray, dict[tuple[float, float | None], float]]:
    """Pick the TV weight (and SIREN's ``omega_0``) whose INR reconstruction scores best against ``reference``.

    The INR counterpart of :func:`kmunet.mri.cs.tune_lambda`: one :func:`inr_reconstruct` fit per pair
    of ``tv_grid x omega_grid`` (TV weights outer), scored by PSNR.

    Args:
        kspace, mask, sens, inr, iterations: as for :func:`inr_reconstruct`.
        reference: ``(H, W)`` fully sampled reference image.
        tv_grid: TV weights to try (default :data:`kmunet.mri.INR_TV_GRID`).
        omega_grid: SIREN first-layer frequencies to try (default :data:`kmunet.mri.INR_OMEGA_GRID`);
            ``None`` keeps the model's own (required for INRs other than SIREN).
        fit_scale: score ``|x|`` after a least-squares intensity fit to ``reference``.
        **options: further :func:`inr_reconstruct` arguments (``lr``, ``device``, ``seed``, ...).

    Returns:
        ``((tv_weight, omega_0), best_image, {(tv_weight, omega_0): psnr})``; ``omega_0`` is ``None``
        when ``omega_grid`` is.

    Raises:
        ValueError: an empty grid, an ``omega_grid`` for a non-SIREN INR, ``tv_weight`` or ``omega_0``
            passed in ``options``, or a bad :func:`inr_reconstruct` argument.
    """
    for key in ("tv_weight", "omega_0"):
        if key in options:
            raise ValueError(f"tune_inr chooses {key} from its grids; do not pass it")
    if omega_grid is not None and inr != "siren":
        raise ValueError(f"omega_grid applies to SIREN only, not {inr!r}; pass omega_grid=None")
    omegas: list[float | None] = [None] if omega_grid is None else [float(w) for w in omega_grid]
    if not omegas or not len(tv_grid):
        raise ValueError(f"empty grid: tv_grid {list(tv_grid)}, omega_grid {omega_grid}")

    return best_on_grid(
        [(float(tv), w) for tv in tv_grid for w in omegas],
        lambda setting: inr_reconstruct(kspace, mask, sens, inr, iterations=iterations, tv_weight=setting[0],
                                        omega_0=setting[1], **options)[0],
        lambda img: psnr(reference, fit_intensity(reference, img) if fit_scale else img),
        name="INR setting",
    )


def reconstruct(
    data: KSpaceData | np.ndarray,
    mask: np.ndarray | None = None,
    method: str = "inr",
    inr: str = "siren",
    iterations: int | None = None,
    lam: float | None = None,
    tv_weight: float | None = None,
    lr: float | None = None,
    sens: np.ndarray | None = None,
    sens_method: str = "auto",
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = False,
    **inr_options: Any,
) -> ReconResult:
    """Reconstruct one 2D slice.

    Args:
        data: :class:`KSpaceData` or a k-space array ``(H, W)`` / ``(C, H, W)``.
        mask: boolean ``(H, W)`` sampling mask; default ``data.mask``, else fully sampled. Unsampled points
            are zeroed before reconstruction.
        method: one of ``"inr"``, ``"zero-filled"``, ``"cs-tv"``, ``"cs-l1"``.
        inr: network for ``method="inr"`` (``"siren"``, ``"fourier"``, ``"wire"``, ``"kan"``).
        iterations: Adam steps (INR) or solver iterations (CS); defaults from :mod:`kmunet.mri`.
        lam: CS regularisation weight.
        tv_weight: INR image-prior weight.
        lr: INR learning rate (default per model, :data:`INR_MODEL_LR` or ``INR_LR``).
        sens: ``(C, H, W)`` sensitivities (estimated from the data with ``sens_method`` when None).
        sens_method: ``"auto"``, ``"espirit"`` or ``"lowres"`` (see :func:`estimate_sensitivities`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (INR only; sigpy CS runs on CPU).
        seed: INR initialisation seed.
        progress: tqdm bar for INR fitting.
        **inr_options: ``hidden_features``, ``hidden_layers``, ``model_kwargs``, ``omega_0``, ``dc_mu``,
            ``prior``, ``prior_eps`` for :func:`inr_reconstruct`.

    Returns:
        :class:`ReconResult`.
    """
    from kmunet.runtime import resolve_device

    if method not in RECON_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {list(RECON_METHODS)}")
    unknown = sorted(set(inr_options) - {"hidden_features", "hidden_layers", "model_kwargs", "omega_0", "dc_mu",
                                         "prior", "prior_eps"})
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for reconstruct")
    if not isinstance(data, KSpaceData):
        data = KSpaceData(kspace=np.asarray(data))
    k = data.kspace
    if mask is None:
        mask = data.mask if data.mask is not None else np.ones(data.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != data.shape:
        raise ValueError(f"mask shape {list(mask.shape)} differs from k-space {list(data.shape)}")
    if not mask.any():
        raise ValueError("mask samples no k-space points")
    t0 = time.perf_counter()
    k = k * mask
    sens_seconds = None
    if sens is None:
        sens = estimate_sensitivities(k, method=sens_method)
        sens_seconds = time.perf_counter() - t0
    sens = np.asarray(sens, dtype=np.complex64)
    if sens.shape != k.shape:
        raise ValueError(f"sensitivities shape {list(sens.shape)} differ from k-space {list(k.shape)}")
    info: dict[str, Any] = {"method": method, "coils": int(k.shape[0]), "shape": list(data.shape),
                            "sampled_fraction": float(mask.mean())}
    if method == "zero-filled":
        image = zero_filled(k, mask, sens)
    elif method in ("cs-tv", "cs-l1"):
        lam = DEFAULT_CS_LAMBDA if lam is None else float(lam)
        its = DEFAULT_CS_ITERATIONS if iterations is None else int(iterations)
        image = cs_reconstruct(k, mask, sens, method=method, lam=lam, iterations=its)
        info.update(lam=lam, iterations=its)
    else:
        image, extra = inr_reconstruct(
            k, mask, sens, inr=inr,
            iterations=INR_ITERATIONS if iterations is None else int(iterations),
            lr=INR_MODEL_LR.get(inr, INR_LR) if lr is None else float(lr),
            tv_weight=INR_TV_WEIGHT if tv_weight is None else float(tv_weight),
            device=resolve_device(device), seed=seed, progress=progress, **inr_options)
        info.update(extra)
    seconds = time.perf_counter() - t0
    info["seconds"] = seconds
    if sens_seconds is not None:
        info["seconds_sensitivities"] = sens_seconds
    return ReconResult(image=np.asarray(image, dtype=np.complex64), seconds=seconds, info=info)


def reference_image(data: KSpaceData, sens: np.ndarray | None = None) -> np.ndarray:
    """Fully sampled reference magnitude ``(H, W)``: ``data.reference`` if simulated, else ``|A^H y|``.

    For multi-coil data this is the SENSE (sensitivity-weighted) coil combination of the fully sampled
    k-space with ``sens`` (estimated when None) -- the image every method estimates.
    """
    if data.reference is not None:
        return np.abs(data.reference).astype(np.float32)
    if sens is None:
        sens = estimate_sensitivities(data.kspace)
    return np.abs(zero_filled(data.kspace, None, sens)).astype(np.float32)
