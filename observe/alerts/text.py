"""How alert text and expressions show numbers: a value as the Go templates Prometheus and
Grafana fill in, the same text made in Python (what promtool's tests expect, what a
store-backed evaluator prints), and bounds in full.

Durations ("s") go through `humanizeDuration`; every other value prints with three
significant digits. `python_value` reproduces both Go functions exactly, so an expected
annotation in a promtool test is the text Prometheus writes.
"""

from __future__ import annotations

import math


def go_value(expression: str, unit: str) -> str:
    """The Go template printing `expression` (e.g. `$value`) in `unit`."""
    if unit == "s":
        return f"{{{{ {expression} | humanizeDuration }}}}"
    return f'{{{{ {expression} | printf "%.3g" }}}}'


def go_label(label: str) -> str:
    return f"{{{{ $labels.{label} }}}}"


def python_value(value: float, unit: str) -> str:
    """What `go_value` prints for `value`."""
    return humanize_duration(value) if unit == "s" else _go_g(value, 3)


def humanize_duration(seconds: float) -> str:
    """Prometheus's `humanizeDuration` template function."""
    v = seconds
    if math.isnan(v) or math.isinf(v):
        return _go_g(v, 4)
    if v == 0:
        return f"{_go_g(v, 4)}s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        whole = int(abs(v))
        days, hours = whole // 86400, whole // 3600 % 24
        minutes, secs = whole // 60 % 60, whole % 60
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {secs}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {secs}s"
        if minutes:
            return f"{sign}{minutes}m {secs}s"
        return f"{sign}{_go_g(abs(v), 4)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{_go_g(v, 4)}{prefix}s"


def _go_g(value: float, digits: int) -> str:
    """Go's `%.<digits>g`, which differs from Python's only in how it spells infinity."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.{digits}g}"


def number(value: float) -> str:
    """A number in full, as PromQL and a person read it: 2592000, 0.3, not 2.592e+06."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def quantity(value: float, unit: str) -> str:
    """A bound as a person writes it: "0.3", "1s", "250ms", "30d"."""
    if unit != "s" or value <= 0:
        return number(value)
    for suffix, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if value >= seconds and value % seconds == 0:
            return f"{number(value // seconds)}{suffix}"
    if value < 1:
        return f"{number(value * 1000)}ms"
    return f"{number(value)}s"
