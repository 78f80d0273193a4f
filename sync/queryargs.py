"""Query parameters as numbers, for both servers' HTTP APIs: a clear message naming the parameter, raised as the
caller's own error (the edge's BadArg, the central's BadRequest), so each answers 400 its usual way."""

from __future__ import annotations

from flask import request


def int_arg(name: str, default: int, lo: int, hi: int, error: type[Exception] = ValueError) -> int:
    """`?name=` as a whole number in [lo, hi]; `default` when absent or empty."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"query parameter {name!r} must be a whole number, got {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise error(f"query parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value


def float_arg(name: str, default: float, lo: float, hi: float, error: type[Exception] = ValueError) -> float:
    """`?name=` as a number of seconds in [lo, hi] (NaN refused); `default` when absent or empty."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise error(f"query parameter {name!r} must be a number of seconds, got {raw[:20]!r}") from None
    if not lo <= value <= hi:  # also refuses NaN
        raise error(f"query parameter {name!r} must be between {lo:g} and {hi:g}, got {raw[:20]}")
    return value


def flag_arg(name: str, error: type[Exception] = ValueError) -> bool:
    """`?name=` as a yes/no: 1 or true, 0 or false; False when absent or empty."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return False
    value = raw.lower()
    if value not in ("1", "true", "0", "false"):
        raise error(f"query parameter {name!r} must be 1 or 0 (true or false), got {raw[:20]!r}")
    return value in ("1", "true")
