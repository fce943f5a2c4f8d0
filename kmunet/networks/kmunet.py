"""KM-UNet: a 2D/3D U-Net whose convolution blocks are KAN convolutions.

Encoder, bottleneck and decoder blocks are :class:`KANResBlock` s: pre-normalisation (so activations
fall inside the spline grid), two :class:`~kmunet.kan.KANConv` s and a residual path; downsampling is
the first KAN convolution's stride, upsampling a learnable transposed convolution, and a final 1x1
convolution projects to class logits. The U-Net layout follows Ronneberger et al. 2015 / Cicek et al.
2016; the KAN edge functions follow Liu et al. 2024 ("KAN: Kolmogorov-Arnold Networks").
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kmunet.config import KANConfig
from kmunet.kan import KANConv
from kmunet.checks import check_dims, check_int, is_integer

__all__ = ["KMUNet", "KANResBlock", "make_norm", "pad_to_multiple", "NORMS"]

#: Valid ``norm`` names.
NORMS = ("instance", "batch", "group")
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad each spatial axis at its high end, by replicating the edge, up to a multiple of ``multiple``.

    Args:
        x: ``(B, C, *spatial)`` (any dtype: integer label maps are padded through float and back).
        multiple: the size every spatial axis must be divisible by.

    Returns:
        ``(B, C, *ceil(spatial / multiple) * multiple)``; ``x`` itself when nothing needs padding.
    """
    pad = [(-n) % multiple for n in x.shape[2:]]
    if not any(pad):
        return x
    # F.pad takes (last_lo, last_hi, ..., first_lo, first_hi): pad at the high end only
    widths = [p for n in reversed(pad) for p in (0, n)]
    if x.is_floating_point():
        return F.pad(x, widths, mode="replicate")
    return F.pad(x.float(), widths, mode="replicate").to(x.dtype)  # replicate padding needs a float tensor


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer by name (``"instance"``, ``"batch"`` or ``"group"``), with affine parameters."""
    if norm == "instance":
        return _INSTANCE[spatial_dims](channels, affine=True)
    if norm == "batch":
        return _BATCH[spatial_dims](channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ValueError(f"unknown norm {norm!r}; valid: {list(NORMS)}")


def _check_odd_kernel(kernel_size: object) -> None:
    """The blocks' "same" padding and residual path need a positive odd kernel size (``ValueError``)."""
    if not is_integer(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer (the residual path keeps the size), got {kernel_size!r}")


class KANResBlock(nn.Module):
    """``norm -> KANConv(stride) -> norm -> KANConv`` plus a residual path.

    The residual is the identity, or a 1x1 (strided) convolution when the shape changes.

    Shapes:
        ``(B, in_channels, *spatial) -> (B, out_channels, *spatial / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm: str = "instance",
        dropout: float = 0.0,
        kan: KANConfig = KANConfig(),
    ) -> None:
        super().__init__()
        _check_odd_kernel(kernel_size)
        kan_args = dict(
            grid_size=kan.grid_size, spline_order=kan.spline_order, grid_range=kan.grid_range,
            scale_noise=kan.scale_noise, scale_base=kan.scale_base, scale_spline=kan.scale_spline,
            grid_eps=kan.grid_eps,
        )
        pad = (kernel_size - 1) // 2
        self.norm1 = make_norm(norm, spatial_dims, in_channels)
        self.conv1 = KANConv(spatial_dims, in_channels, out_channels, kernel_size, stride=stride, padding=pad, **kan_args)
        self.norm2 = make_norm(norm, spatial_dims, out_channels)
        self.conv2 = KANConv(spatial_dims, out_channels, out_channels, kernel_size, padding=pad, **kan_args)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.residual: nn.Module = _CONV[spatial_dims](in_channels, out_channels, 1, stride=stride, bias=False)
        else:
            self.residual = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.norm1(x))
        y = self.conv2(self.dropout(self.norm2(y)))
        return y + self.residual(x)


class KMUNet(nn.Module):
    """U-Net with KAN-convolution blocks, for 2D or 3D segmentation.

    Args:
        spatial_dims: 2 or 3 (1 also works).
        in_channels: image channels.
        out_channels: classes (logits).
        channels: feature channels per level, e.g. ``(16, 32, 64, 128)``; the last is the bottleneck.
        strides: downsampling strides between levels (``len(channels) - 1`` entries).
        kernel_size: KAN convolution kernel size (odd).
        norm: ``"instance"``, ``"batch"`` or ``"group"``.
        dropout: dropout inside blocks.
        kan: KAN edge-function settings (grid size, spline order, grid range, ...).
        deep_supervision: number of auxiliary outputs (0: none). With ``n > 0`` the decoder levels
            1..n below full resolution get their own ``norm -> SiLU -> 1x1 conv`` head, and in training
            mode the forward pass returns ``[logits, aux_1, ..., aux_n]``, ``aux_l`` at ``1 / prod(
            strides[:l])`` of the input size, for a loss on every level (nnU-Net's deep supervision,
            Isensee et al. 2021; MONAI ``DeepSupervisionLoss``). In eval mode only the logits are
            returned, so inference is unchanged. At most ``len(strides) - 1`` (the decoder's levels).

    Shapes:
        ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` for any spatial size: inputs not
        divisible by the total stride are padded (replicate) and the logits cropped back. In training
        mode with ``deep_supervision = n > 0``: a list of ``n + 1`` tensors
        ``(B, out_channels, *ceil(spatial / prod(strides[:l])))``, ``l = 0..n``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        kernel_size: int = 3,
        norm: str = "instance",
        dropout: float = 0.0,
        kan: KANConfig = KANConfig(),
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        spatial_dims = check_dims("spatial_dims", spatial_dims, tuple(sorted(_CONV)))
        in_channels, out_channels = check_int("in_channels", in_channels), check_int("out_channels", out_channels)
        if not is_integer(kernel_size):
            raise TypeError(f"kernel_size must be one odd integer for every axis, got {kernel_size!r}")
        for name, value, what in (("channels", channels, "one integer per level"),
                                  ("strides", strides, "one integer per level (the same on every axis)")):
            if not isinstance(value, Sequence) or isinstance(value, str) or not all(is_integer(v) for v in value):
                raise TypeError(f"{name} must be {what}, got {value!r}")
        kernel_size = int(kernel_size)
        strides = tuple(int(s) for s in strides)
        if not isinstance(kan, KANConfig):
            raise TypeError(f"kan must be a kmunet.config.KANConfig, got {type(kan).__name__}"
                            " (e.g. KANConfig(grid_size=3))")
        channels = tuple(channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {channels!r}")
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides must have len(channels) - 1 = {len(channels) - 1} entries, got {strides!r}")
        if any(c < 1 for c in channels) or any(s < 1 for s in strides):
            raise ValueError(f"channels and strides must be positive, got {channels!r}, {strides!r}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {list(NORMS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not is_integer(deep_supervision) or not 0 <= deep_supervision < len(strides):
            raise ValueError(f"deep_supervision must be an integer in [0, len(strides) - 1 = {len(strides) - 1}] "
                             f"(decoder levels below full resolution), got {deep_supervision!r}")
        self.deep_supervision = int(deep_supervision)
        self.strides = strides
        self.spatial_dims = spatial_dims
        self.total_stride = math.prod(strides)
        # total stride of each auxiliary output: aux_l is 1 / prod(strides[:l]) of the input size
        self.aux_strides = tuple(math.prod(strides[:level]) for level in range(1, self.deep_supervision + 1))
        block = dict(spatial_dims=spatial_dims, kernel_size=kernel_size, norm=norm, dropout=dropout, kan=kan)
        _check_odd_kernel(kernel_size)  # before the stem: every block needs it
        self.stem = _CONV[spatial_dims](in_channels, channels[0], kernel_size, padding=(kernel_size - 1) // 2)
        self.encoder = nn.ModuleList([KANResBlock(in_channels=channels[0], out_channels=channels[0], **block)])
        for i, s in enumerate(strides):
            self.encoder.append(KANResBlock(in_channels=channels[i], out_channels=channels[i + 1], stride=s, **block))
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(strides))):
            s = strides[i]
            self.upsample.append(_CONV_T[spatial_dims](channels[i + 1], channels[i], kernel_size=s, stride=s))
            self.decoder.append(KANResBlock(in_channels=2 * channels[i], out_channels=channels[i], **block))
        self.head = self._make_head(norm, channels[0], out_channels)
        # aux_heads[l - 1] reads the decoder output of level l (channels[l] features, 1 / prod(strides[:l]))
        self.aux_heads = nn.ModuleList(
            [self._make_head(norm, channels[level], out_channels) for level in range(1, self.deep_supervision + 1)]
        )

    def _make_head(self, norm: str, channels: int, out_channels: int) -> nn.Sequential:
        """``norm -> SiLU -> 1x1 conv`` from ``channels`` features to class logits."""
        return nn.Sequential(make_norm(norm, self.spatial_dims, channels), nn.SiLU(),
                             _CONV[self.spatial_dims](channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"KMUNet({self.spatial_dims}D) expects (B, C, *spatial), got shape {tuple(x.shape)}")
        spatial = x.shape[2:]
        if math.prod(-(-n // self.total_stride) for n in spatial) < 2:
            raise ValueError(f"input spatial shape {list(spatial)} is too small for KMUNet: its bottleneck (1/"
                             f"{self.total_stride} per axis) would hold a single voxel, which normalisation cannot "
                             f"handle; give at least {self.total_stride + 1} voxels along some axis")
        y = self.stem(pad_to_multiple(x, self.total_stride))
        skips = []
        for block in self.encoder:
            y = block(y)
            skips.append(y)
        skips.pop()  # the bottleneck output is not a skip
        supervise = self.training and self.deep_supervision > 0
        aux: list[Tensor] = []
        for level, up, block in zip(reversed(range(len(self.strides))), self.upsample, self.decoder):
            y = block(torch.cat([up(y), skips.pop()], dim=1))
            if supervise and 1 <= level <= self.deep_supervision:
                factor = self.aux_strides[level - 1]
                crop = tuple(slice(0, -(-n // factor)) for n in spatial)
                # (B, out, *padded / factor) -> (B, out, *ceil(spatial / factor)): drop the padding's share
                aux.insert(0, self.aux_heads[level - 1](y)[(slice(None), slice(None)) + crop])
        logits = self.head(y)
        if logits.shape[2:] != spatial:  # the input was padded: crop back
            logits = logits[(slice(None), slice(None)) + tuple(slice(0, n) for n in spatial)]
        return [logits, *aux] if supervise else logits
