"""Argument checks shared by the package's public constructors and entry points."""

from __future__ import annotations

import math
import numbers
import operator
from pathlib import Path

__all__ = ["is_integer", "is_finite_real", "check_int", "check_positive", "check_real", "check_dims", "first_line", "strip_path", "error_reason"]


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


def is_finite_real(value: object) -> bool:
    """A finite Python or NumPy real number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def check_real(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a ``float`` when it is a finite real number (not a bool) in ``[low, high]``.

    Raises:
        ValueError: anything else (the message names ``name``, the value and the allowed range).
    """
    if not is_finite_real(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = "" if low is None and high is None else (
            f" >= {low:g}" if high is None else f" <= {high:g}" if low is None else f" in [{low:g}, {high:g}]")
        raise ValueError(f"{name} must be a finite number{bounds}, got {value!r}")
    return float(value)


def check_dims(name: str, value: object, valid: tuple[int, ...] = (1, 2, 3)) -> int:
    """``value`` as an ``int`` when it is one of the integers ``valid`` (a bool is not ``1``).

    Raises:
        ValueError: anything else (the message names ``name`` and lists ``valid``).
    """
    if not is_integer(value) or operator.index(value) not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
    return operator.index(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a ``float`` when it is a finite real number > 0 (Python or NumPy, not a bool).

    Raises:
        ValueError: anything else (the message names ``name`` and the value).
    """
    if not is_finite_real(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def strip_path(message: str, path: str | Path) -> str:
    """``message`` without a leading ``"<path>: "`` (as typed or resolved), for reports that name the file."""
    for prefix in (f"{path}: ", f"{Path(path).resolve()}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def error_reason(err: BaseException, path: str | Path) -> str:
    """The first line of ``err`` without a leading ``"<path>: "``: the reason, for a message that names ``path``."""
    return strip_path(first_line(err), path)
