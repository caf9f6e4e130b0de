"""YAML as the generated alert files are written: keys in the order given, block style,
long lines (PromQL) kept whole, and the same bytes for the same input."""

from __future__ import annotations

from typing import Any

import yaml


def dump(data: Any, header: str) -> str:
    """`data` as YAML under a comment `header` saying where the file comes from."""
    body = yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000
    )
    return f"# {header}\n{body}"
