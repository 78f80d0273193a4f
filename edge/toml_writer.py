"""A small TOML writer for store configs made by programs (the demo, tests, benchmarks).

The standard library reads TOML but does not write it; configs here are plain tables, arrays of
tables, scalars, lists and inline dicts, which a few lines cover without another dependency.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_scalar(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write a {type(v).__name__} as TOML")


def dumps(data: dict[str, Any]) -> str:
    """TOML text for a config mapping; a table's nested dicts become sub-tables ([http.tokens])."""
    top: list[str] = []
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_scalar(v)}" for k, v in value.items() if not isinstance(v, dict)]
            for k, v in value.items():
                if isinstance(v, dict):
                    lines.append(f"[{key}.{k}]")
                    lines += [f"{kk} = {_scalar(vv)}" for kk, vv in v.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_scalar(v)}" for k, v in item.items()]
        else:
            top.append(f"{key} = {_scalar(value)}")
    return "\n".join(top + lines) + "\n"


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(dumps(data))
    return path
