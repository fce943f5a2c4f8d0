"""Coordinate networks (implicit neural representations) with one interface.

Every model maps coordinates ``(..., in_features)`` in ``[-1, 1]`` to values ``(..., out_features)``:
real-valued by default, complex-valued (``torch.complex64`` / ``complex128``) with ``complex_output=True``.
Build them by name with :func:`build_inr` (names in :data:`INR_MODELS`):

* ``"siren"``   -- sine-activated MLP (Sitzmann et al. 2020, "Implicit Neural Representations with
  Periodic Activation Functions", NeurIPS).
* ``"fourier"`` -- Gaussian random Fourier features followed by a ReLU MLP (Tancik et al. 2020,
  "Fourier Features Let Networks Learn High Frequency Functions in Low Dimensional Domains", NeurIPS).
* ``"wire"``    -- complex Gabor-wavelet activations ``exp(j*omega*x - |s*x|^2)`` (Saragadam et al. 2023,
  "WIRE: Wavelet Implicit Neural Representations", CVPR).
* ``"kan"``     -- a Kolmogorov-Arnold network of :class:`kmunet.kan.KANLinear` layers (Liu et al. 2024),
  optionally with a learnable Fourier-series first layer as in FKAN (Mehrabian et al. 2024,
  "Implicit Neural Representations with Fourier Kolmogorov-Arnold Networks").

Initialisation is reproducible: each model draws its parameters from its own ``torch.Generator`` seeded
by the ``seed`` argument (on CPU, so the same seed gives the same weights on every device) and never
changes the global random state. ``hidden_layers`` counts hidden-to-hidden layers: a model has an input
layer, ``hidden_layers`` hidden layers and an output layer.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kmunet.checks import check_int, check_positive

__all__ = [
    "INR_MODELS",
    "CoordinateNet",
    "SIREN",
    "FourierMLP",
    "WIRE",
    "KANINR",
    "build_inr",
    "evaluate",
]

#: Valid names for :func:`build_inr`.
from kmunet.options import INR_MODELS  # noqa: E402  (names shared with the CLI)


# ---------------------------------------------------------------------------------------------- helpers
def _check_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _make_generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()  # non-deterministic, without touching the global generator
    else:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        gen.manual_seed(seed)
    return gen


def _uniform_(t: Tensor, bound: float, gen: torch.Generator) -> None:
    """In-place U(-bound, bound) from ``gen``; complex tensors get independent real and imaginary parts."""
    with torch.no_grad():
        if t.is_complex():
            real = torch.empty(t.shape, dtype=t.real.dtype).uniform_(-bound, bound, generator=gen)
            imag = torch.empty(t.shape, dtype=t.real.dtype).uniform_(-bound, bound, generator=gen)
            t.copy_(torch.complex(real, imag))
        else:
            t.copy_(torch.empty(t.shape, dtype=t.dtype).uniform_(-bound, bound, generator=gen))


def _default_linear_init(layer: nn.Linear, gen: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` initialisation (weights and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    bound = 1.0 / math.sqrt(layer.in_features)
    _uniform_(layer.weight, bound, gen)
    if layer.bias is not None:
        _uniform_(layer.bias, bound, gen)


class CoordinateNet(nn.Module):
    """Base class: argument checks, complex output handling and device placement.

    Attributes:
        in_features: coordinate dimension d.
        out_features: number of output channels c.
        complex_output: whether ``forward`` returns a complex tensor.
    """

    def __init__(self, in_features: int, out_features: int, complex_output: bool) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        if not isinstance(complex_output, bool):
            raise ValueError(f"complex_output must be a bool, got {complex_output!r}")
        self.complex_output = complex_output

    @property
    def head_features(self) -> int:
        """Real outputs of the last layer: ``2 * out_features`` for complex output, else ``out_features``."""
        return 2 * self.out_features if self.complex_output else self.out_features

    def _check_coords(self, coords: Tensor) -> Tensor:
        """Check ``(..., in_features)`` and return the coordinates in the model's floating dtype."""
        if coords.dim() < 1 or coords.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects coordinates (..., {self.in_features}), got shape {tuple(coords.shape)}")
        if coords.is_complex() or coords.dtype == torch.bool:
            raise TypeError(f"{type(self).__name__} expects real coordinates, got dtype {coords.dtype}")
        param = next(self.parameters(), None)
        return coords.to(param.dtype) if param is not None and coords.dtype != param.dtype else coords

    def _finish_output(self, y: Tensor) -> Tensor:
        """``(..., head_features)`` real -> ``(..., out_features)`` real or complex."""
        if not self.complex_output:
            return y
        return torch.view_as_complex(y.reshape(y.shape[:-1] + (self.out_features, 2)).contiguous())


# ---------------------------------------------------------------------------------------------- SIREN
class SineLayer(nn.Module):
    """``sin(omega_0 * (W x + b))`` with the SIREN initialisation (Sitzmann et al. 2020, Sec. 3.2).

    First layer: ``W ~ U(-1/n, 1/n)``; other layers: ``W ~ U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0)``
    with ``n`` the fan-in. Biases keep PyTorch's default ``U(-1/sqrt(n), 1/sqrt(n))``.
    """

    def __init__(self, in_features: int, out_features: int, omega_0: float, is_first: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.omega_0 = omega_0
        self.is_first = is_first
        self.linear = nn.Linear(in_features, out_features, dtype=dtype)

    def reset_parameters(self, gen: torch.Generator) -> None:
        n = self.linear.in_features
        bound = 1.0 / n if self.is_first else math.sqrt(6.0 / n) / self.omega_0
        _uniform_(self.linear.weight, bound, gen)
        _uniform_(self.linear.bias, 1.0 / math.sqrt(n), gen)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


class SIREN(CoordinateNet):
    """Sinusoidal representation network (Sitzmann et al. 2020, NeurIPS, arXiv:2006.09661).

    ``x -> sin(omega_0 (W_0 x + b_0)) -> [sin(omega_hidden (W_i h + b_i))] * hidden_layers -> W_out h + b_out``.

    Args:
        in_features: coordinate dimension d.
        out_features: output channels c.
        hidden_features: width of every hidden layer.
        hidden_layers: number of hidden-to-hidden sine layers.
        complex_output: return complex ``(..., c)`` (the last layer then has ``2c`` real outputs).
        omega_0: frequency of the first layer (30 in the paper).
        omega_hidden: frequency of the hidden layers (30 in the paper).
        seed: initialisation seed (own generator; global RNG untouched). ``None``: non-deterministic.
        device: parameter device.
        dtype: ``torch.float32`` (default) or ``torch.float64``.

    Shapes:
        ``(..., d)`` coordinates in ``[-1, 1]`` -> ``(..., c)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 256,
        hidden_layers: int = 3,
        complex_output: bool = False,
        *,
        omega_0: float = 30.0,
        omega_hidden: float = 30.0,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, complex_output)
        check_int("hidden_features", hidden_features)
        check_int("hidden_layers", hidden_layers, minimum=0)
        self.omega_0 = check_positive("omega_0", omega_0)
        self.omega_hidden = check_positive("omega_hidden", omega_hidden)
        dtype = _check_dtype(dtype)
        gen = _make_generator(seed)
        with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
            layers = [SineLayer(in_features, hidden_features, self.omega_0, True, dtype)]
            layers += [SineLayer(hidden_features, hidden_features, self.omega_hidden, False, dtype) for _ in range(hidden_layers)]
            self.layers = nn.ModuleList(layers)
            self.output = nn.Linear(hidden_features, self.head_features, dtype=dtype)
        for layer in self.layers:
            layer.reset_parameters(gen)
        # Final linear layer: same bound as the hidden sine layers (reference implementation).
        bound = math.sqrt(6.0 / hidden_features) / self.omega_hidden
        _uniform_(self.output.weight, bound, gen)
        _uniform_(self.output.bias, 1.0 / math.sqrt(hidden_features), gen)
        self.to(device)

    def forward(self, coords: Tensor) -> Tensor:
        coords = self._check_coords(coords)
        h = coords
        for layer in self.layers:
            h = layer(h)
        return self._finish_output(self.output(h))


# ---------------------------------------------------------------------------------------------- Fourier
class FourierMLP(CoordinateNet):
    """Gaussian random Fourier features + ReLU MLP (Tancik et al. 2020, NeurIPS, arXiv:2006.10739).

    ``gamma(x) = [cos(2 pi B x), sin(2 pi B x)]`` with ``B ~ N(0, sigma^2)`` of shape
    ``(num_frequencies, d)``, drawn once from the seeded generator and stored as the buffer ``B`` (saved
    in the state dict, never trained), followed by ``hidden_layers + 1`` ReLU layers and a linear output.

    Args:
        in_features: coordinate dimension d.
        out_features: output channels c.
        hidden_features: MLP width.
        hidden_layers: number of hidden-to-hidden ReLU layers.
        complex_output: return complex ``(..., c)``.
        sigma: standard deviation of the frequencies (cycles per unit coordinate; coordinates span 2).
        num_frequencies: number of random frequencies m (features ``2m``).
        seed: initialisation seed (own generator). ``None``: non-deterministic.
        device: parameter device.
        dtype: ``torch.float32`` or ``torch.float64``.

    Shapes:
        ``(..., d)`` -> ``(..., c)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 256,
        hidden_layers: int = 3,
        complex_output: bool = False,
        *,
        sigma: float = 5.0,
        num_frequencies: int = 256,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, complex_output)
        check_int("hidden_features", hidden_features)
        check_int("hidden_layers", hidden_layers, minimum=0)
        self.sigma = check_positive("sigma", sigma)
        self.num_frequencies = check_int("num_frequencies", num_frequencies)
        dtype = _check_dtype(dtype)
        gen = _make_generator(seed)
        B = torch.randn(num_frequencies, in_features, generator=gen, dtype=torch.float64) * self.sigma
        self.register_buffer("B", B.to(dtype))
        with torch.random.fork_rng(devices=[]):
            dims = [2 * num_frequencies] + [hidden_features] * (hidden_layers + 1)
            self.layers = nn.ModuleList(nn.Linear(a, b, dtype=dtype) for a, b in zip(dims[:-1], dims[1:]))
            self.output = nn.Linear(hidden_features, self.head_features, dtype=dtype)
        for layer in list(self.layers) + [self.output]:
            _default_linear_init(layer, gen)
        self.to(device)

    def features(self, coords: Tensor) -> Tensor:
        """Fourier features ``(..., 2 * num_frequencies)``."""
        proj = 2.0 * math.pi * (coords @ self.B.t())
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)

    def forward(self, coords: Tensor) -> Tensor:
        coords = self._check_coords(coords)
        h = self.features(coords)
        for layer in self.layers:
            h = F.relu(layer(h))
        return self._finish_output(self.output(h))


# ---------------------------------------------------------------------------------------------- WIRE
class GaborLayer(nn.Module):
    """Linear map followed by the complex Gabor wavelet ``exp(j omega_0 z - |s_0 z|^2)`` (WIRE, Eq. 6).

    The first layer is real-valued (coordinates are real); later layers have complex weights.
    """

    def __init__(self, in_features: int, out_features: int, omega_0: float, scale_0: float, is_first: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.omega_0, self.scale_0, self.is_first = omega_0, scale_0, is_first
        self.linear = nn.Linear(in_features, out_features, dtype=dtype if is_first else _complex_of(dtype))

    def reset_parameters(self, gen: torch.Generator) -> None:
        _default_linear_init(self.linear, gen)

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x)
        return torch.exp(1j * self.omega_0 * z - (self.scale_0 * z).abs().square())


class WIRE(CoordinateNet):
    """Wavelet implicit neural representation (Saragadam et al. 2023, CVPR, arXiv:2301.05187).

    Complex Gabor activations ``exp(j omega_0 z - |s_0 z|^2)``; as in the reference code the hidden width
    is ``hidden_features / sqrt(2)`` (complex units hold two real numbers) and the output layer is complex.
    Real output is its real part; complex output is returned as is.

    Args:
        in_features: coordinate dimension d.
        out_features: output channels c.
        hidden_features: nominal width (the complex width is ``int(hidden_features / sqrt(2))``).
        hidden_layers: number of hidden-to-hidden Gabor layers.
        complex_output: return complex ``(..., c)``.
        omega_0: wavelet frequency (20 in the paper).
        scale_0: wavelet spread s_0 (10 in the paper).
        seed: initialisation seed (own generator). ``None``: non-deterministic.
        device: parameter device.
        dtype: ``torch.float32`` (complex64 weights) or ``torch.float64`` (complex128).

    Shapes:
        ``(..., d)`` -> ``(..., c)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 256,
        hidden_layers: int = 3,
        complex_output: bool = False,
        *,
        omega_0: float = 20.0,
        scale_0: float = 10.0,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, complex_output)
        check_int("hidden_features", hidden_features)
        check_int("hidden_layers", hidden_layers, minimum=0)
        self.omega_0 = check_positive("omega_0", omega_0)
        self.scale_0 = check_positive("scale_0", scale_0)
        dtype = _check_dtype(dtype)
        width = max(1, int(hidden_features / math.sqrt(2.0)))
        gen = _make_generator(seed)
        with torch.random.fork_rng(devices=[]):
            layers = [GaborLayer(in_features, width, self.omega_0, self.scale_0, True, dtype)]
            layers += [GaborLayer(width, width, self.omega_0, self.scale_0, False, dtype) for _ in range(hidden_layers)]
            self.layers = nn.ModuleList(layers)
            self.output = nn.Linear(width, out_features, dtype=_complex_of(dtype))
        for layer in self.layers:
            layer.reset_parameters(gen)
        _default_linear_init(self.output, gen)
        self.to(device)

    def forward(self, coords: Tensor) -> Tensor:
        coords = self._check_coords(coords)
        h = coords
        for layer in self.layers:
            h = layer(h)
        y = self.output(h)
        return y if self.complex_output else y.real


# ---------------------------------------------------------------------------------------------- KAN
class FourierKANLayer(nn.Module):
    """Learnable Fourier-series edge functions (FKAN first layer, Mehrabian et al. 2024).

    ``y_o = sum_i sum_{k=1..K} a_{oik} cos(k pi x_i) + b_{oik} sin(k pi x_i) + bias_o``: every edge is a
    learnable truncated Fourier series, so the first layer can represent high frequencies directly.
    Coefficients start at ``N(0, 1 / (in * K))`` scaled by ``1 / k`` (smooth at initialisation).
    """

    def __init__(self, in_features: int, out_features: int, num_frequencies: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.coef = nn.Parameter(torch.empty(out_features, in_features, 2, num_frequencies, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))
        self.register_buffer("k", torch.arange(1, num_frequencies + 1, dtype=dtype) * math.pi)

    def reset_parameters(self, gen: torch.Generator) -> None:
        out_f, in_f, _, K = self.coef.shape
        with torch.no_grad():
            c = torch.randn(self.coef.shape, generator=gen, dtype=torch.float64) / math.sqrt(in_f * K)
            c = c * math.sqrt(K) / torch.arange(1, K + 1, dtype=torch.float64).sqrt()
            self.coef.copy_(c.to(self.coef.dtype))
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        arg = x.unsqueeze(-1) * self.k  # (..., in, K)
        feats = torch.stack([torch.cos(arg), torch.sin(arg)], dim=-2)  # (..., in, 2, K)
        return feats.flatten(-3) @ self.coef.flatten(1).t() + self.bias


class KANINR(CoordinateNet):
    """KAN coordinate network built from :class:`kmunet.kan.KANLinear` (Liu et al. 2024, arXiv:2404.19756).

    ``x -> [FourierKANLayer | KANLinear] -> tanh -> KANLinear -> tanh -> ... -> KANLinear``. Between layers
    ``tanh`` (optionally after a LayerNorm) keeps activations inside the spline grid ``(-1, 1)``. With
    ``fourier_first=True`` the first layer is a learnable Fourier series per edge as in FKAN (Mehrabian et
    al. 2024, arXiv:2409.09323), which removes the spectral bias of plain B-spline KANs.

    Args:
        in_features: coordinate dimension d.
        out_features: output channels c.
        hidden_features: width of the hidden KAN layers (KAN layers are ``1 + G + k`` times wider than
            an MLP layer of the same width; 32-64 is typical).
        hidden_layers: number of hidden-to-hidden KAN layers.
        complex_output: return complex ``(..., c)``.
        grid_size: B-spline intervals G.
        spline_order: B-spline order k.
        fourier_first: use a learnable Fourier-series first layer.
        num_frequencies: harmonics K of the Fourier first layer.
        layer_norm: LayerNorm before each ``tanh`` (off by default: it fitted worse in our tests).
        seed: initialisation seed (own generator). ``None``: non-deterministic.
        device: parameter device.
        dtype: ``torch.float32`` or ``torch.float64``.

    Shapes:
        ``(..., d)`` -> ``(..., c)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 64,
        hidden_layers: int = 2,
        complex_output: bool = False,
        *,
        grid_size: int = 8,
        spline_order: int = 3,
        fourier_first: bool = True,
        num_frequencies: int = 16,
        layer_norm: bool = False,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, complex_output)
        from kmunet.kan import KANLinear

        check_int("hidden_features", hidden_features)
        check_int("hidden_layers", hidden_layers, minimum=0)
        check_int("grid_size", grid_size)
        check_int("spline_order", spline_order, minimum=0)
        check_int("num_frequencies", num_frequencies)
        if not isinstance(fourier_first, bool):
            raise ValueError(f"fourier_first must be a bool, got {fourier_first!r}")
        if not isinstance(layer_norm, bool):
            raise ValueError(f"layer_norm must be a bool, got {layer_norm!r}")
        self.fourier_first = fourier_first
        dtype = _check_dtype(dtype)
        gen = _make_generator(seed)
        kan = dict(grid_size=grid_size, spline_order=spline_order, grid_range=(-1.0, 1.0), dtype=dtype)
        with torch.random.fork_rng(devices=[]):
            if fourier_first:
                self.first: nn.Module = FourierKANLayer(in_features, hidden_features, num_frequencies, dtype)
            else:
                self.first = KANLinear(in_features, hidden_features, **kan)
            self.hidden = nn.ModuleList(KANLinear(hidden_features, hidden_features, **kan) for _ in range(hidden_layers))
            self.norms = nn.ModuleList(
                nn.LayerNorm(hidden_features, dtype=dtype) if layer_norm else nn.Identity() for _ in range(hidden_layers + 1)
            )
            self.output = KANLinear(hidden_features, self.head_features, **kan)
        if fourier_first:
            self.first.reset_parameters(gen)
        for layer in ([] if fourier_first else [self.first]) + list(self.hidden) + [self.output]:
            self._reset_kan(layer, gen)
        self.to(device)

    @staticmethod
    def _reset_kan(layer: nn.Module, gen: torch.Generator, scale_noise: float = 0.1) -> None:
        """KANLinear's own initialisation (Xavier-uniform ``w_b``, ``w_s = 1``, small spline noise), from ``gen``."""
        w = layer.base_weight
        fan_out, fan_in = w.shape[0], w[0].numel()
        _uniform_(w, math.sqrt(6.0 / (fan_in + fan_out)), gen)
        with torch.no_grad():
            layer.spline_scaler.fill_(1.0)
            noise = torch.randn(layer.spline_coef.shape, generator=gen, dtype=torch.float64) * (scale_noise / math.sqrt(fan_in))
            layer.spline_coef.copy_(noise.to(layer.spline_coef.dtype))

    def forward(self, coords: Tensor) -> Tensor:
        coords = self._check_coords(coords)
        h = torch.tanh(self.norms[0](self.first(coords)))
        for layer, norm in zip(self.hidden, self.norms[1:]):
            h = torch.tanh(norm(layer(h)))
        return self._finish_output(self.output(h))


# ---------------------------------------------------------------------------------------------- factory
_REGISTRY: dict[str, Callable[..., CoordinateNet]] = {
    "siren": SIREN,
    "fourier": FourierMLP,
    "wire": WIRE,
    "kan": KANINR,
}


def build_inr(
    name: str,
    in_features: int,
    out_features: int,
    *,
    hidden_features: int = 256,
    hidden_layers: int = 3,
    complex_output: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a coordinate network by name.

    Args:
        name: one of :data:`INR_MODELS` (``"siren"``, ``"fourier"``, ``"wire"``, ``"kan"``).
        in_features: coordinate dimension d (coordinates are expected in ``[-1, 1]``).
        out_features: output channels c.
        hidden_features: hidden width.
        hidden_layers: number of hidden-to-hidden layers.
        complex_output: return a complex tensor ``(..., c)``.
        **kwargs: model-specific options (``seed``, ``device``, ``dtype`` for all; ``omega_0`` ... see
            the model classes).

    Returns:
        A module mapping ``(..., d)`` to ``(..., c)`` (real, or complex with ``complex_output``).

    Raises:
        ValueError: unknown name, unknown keyword argument or invalid value.
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown INR model {name!r}; valid: {list(INR_MODELS)}")
    cls = _REGISTRY[key]
    valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for INR model {key!r}; valid: {sorted(valid)}")
    return cls(in_features, out_features, hidden_features=hidden_features, hidden_layers=hidden_layers,
               complex_output=complex_output, **kwargs)


def _model_placement(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and real floating dtype of the model's first parameter (or buffer)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() or t.is_complex():
            return t.device, t.real.dtype
    return None, None


def evaluate(model: nn.Module, coords: Tensor, chunk_size: int = 65536) -> Tensor:
    """Evaluate a coordinate network on many points in chunks, without gradients.

    Args:
        model: a coordinate network.
        coords: ``(..., d)`` coordinates; moved chunk by chunk to the model's device and floating dtype.
        chunk_size: points per forward pass (bounds memory).

    Returns:
        ``(..., c)`` outputs on the device of ``coords``.
    """
    check_int("chunk_size", chunk_size)
    if coords.dim() < 1:
        raise ValueError(f"coords must have shape (..., d), got {tuple(coords.shape)}")
    lead, d = coords.shape[:-1], coords.shape[-1]
    flat = coords.reshape(-1, d)
    device, dtype = _model_placement(model)
    device = device or coords.device
    dtype = dtype or (coords.dtype if coords.is_floating_point() else torch.get_default_dtype())
    outs = []
    with torch.no_grad():
        for start in range(0, flat.shape[0], chunk_size):
            outs.append(model(flat[start:start + chunk_size].to(device=device, dtype=dtype)).to(coords.device))
    if not outs:  # no points: run one dummy point to learn the output dtype and trailing shape
        with torch.no_grad():
            probe = model(torch.zeros(1, d, dtype=dtype, device=device))
        return torch.empty(lead + probe.shape[1:], dtype=probe.dtype, device=coords.device)
    return torch.cat(outs, dim=0).reshape(lead + outs[0].shape[1:])
