"""Implicit neural representations (coordinate networks) and INR-based resampling.

``build_inr(name, in_features, out_features, ...)`` builds SIREN, Fourier-feature MLP, WIRE or KAN
coordinate networks (see :mod:`kmunet.inr.models`); :func:`evaluate` runs one on many points in chunks.
Resampling tools live in :mod:`kmunet.inr.resample`, :mod:`kmunet.inr.geometry` and :mod:`kmunet.inr.prior`
(imported lazily so that ``import kmunet.inr`` stays light).
"""

from kmunet.inr.models import INR_MODELS, KANINR, SIREN, WIRE, CoordinateNet, FourierMLP, build_inr, evaluate

__all__ = ["INR_MODELS", "CoordinateNet", "FourierMLP", "KANINR", "SIREN", "WIRE", "build_inr", "evaluate"]
