"""Values as the text of a TOML file, for tests that write settings files from generated
values: every string, key and float comes back from `tomllib` as it went in."""

from __future__ import annotations

import json
import math
from typing import Any


def toml(values: dict[str, Any]) -> str:
    """`values` as TOML: keys before tables, a nested dict as a [dotted.table]; None (TOML
    has no null) as the text "none"."""
    return _table(values, ())


def _table(values: dict[str, Any], path: tuple[str, ...]) -> str:
    lines = [f"[{'.'.join(map(_string, path))}]"] if path else []
    lines += [f"{_string(k)} = {_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    text = "".join(line + "\n" for line in lines)
    for key, value in values.items():
        if isinstance(value, dict):
            text += _table(value, (*path, key))
    return text


def _value(v: Any) -> str:
    if v is None:
        return '"none"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _string(text: str) -> str:
    # JSON's escapes are TOML's, but TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
