"""Argument checks shared by the package's public constructors and entry points."""

from __future__ import annotations

import math
import numbers
import operator

__all__ = ["is_integer", "check_int", "check_positive"]


def is_integer(value: object) -> bool:
    """A Python or NumPy integer (not a bool): what ``operator.index`` accepts."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (Python or NumPy) >= ``minimum``.

    Raises:
        ValueError: not an integer, a bool, or below ``minimum`` (the message names ``name``).
    """
    if not is_integer(value) or operator.index(value) < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return operator.index(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a ``float`` when it is a finite real number > 0 (Python or NumPy, not a bool).

    Raises:
        ValueError: anything else (the message names ``name`` and the value).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
