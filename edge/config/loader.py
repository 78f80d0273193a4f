"""Load and validate the store config (one TOML file) into one typed, immutable object.

Every error is reported at once with its key path and a hint, because store IT fixes a config by reading
the message, not the source. Unknown keys are errors: a typo must never silently fall back to a default.
Secrets may come from the environment: INSTORE_EDGE_<SECTION>_<KEY> (e.g. INSTORE_EDGE_MQTT_PASSWORD,
INSTORE_EDGE_HTTP_TOKENS_ADMIN, INSTORE_EDGE_QR_SECRET, INSTORE_EDGE_CENTRAL_TOKEN); from there or from the
file, a short, placeholder, published, guessable or shared secret is an error unless `[store] demo = true`.
"""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge.config.checks import check_secrets, cross_check
from edge.config.issues import ConfigError, ConfigIssue
from edge.config.schema import Config
from edge.config.sections import ENV_PREFIX


_HINTS = {
    "extra_forbidden": "check its spelling against config/store.example.toml",
    "missing": "this key is required",
    "int_parsing": "write a whole number without quotes",
    "int_type": "write a whole number without quotes",
    "float_parsing": "write a number without quotes",
    "bool_parsing": "write true or false without quotes",
    "bool_type": "write true or false without quotes",
    "string_type": "write a quoted string",
    "string_pattern_mismatch": "ids use letters, digits, '-', '_' and '.'; URLs start with http:// or https://",
    "literal_error": "use one of the listed values",
    "list_type": "write a list, e.g. [\"a\", \"b\"]",
    "model_type": "write a table ([section]) here",
}


_SECRET_KEYS = {"password", "tokens", "token", "secret"}


def _loc_to_path(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Turn pydantic's location into a key path a person can find in the file: zones[2].id."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = ""
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("id") or node[item].get("key")
                label = f" (id {ident!r})" if isinstance(ident, str) else ""
            parts[-1] = f"{parts[-1]}[{item}]{label}" if parts else f"[{item}]"
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows in the table that holds loc[-1]."""
    model: Any = Config
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
        if get_origin(model) is list:
            model = get_args(model)[0]
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _issues_from_validation(exc: ValidationError, data: dict[str, Any],
                            from_env: dict[tuple[str, ...], str] | None = None) -> list[ConfigIssue]:
    issues = []
    unions_seen: set[tuple[Any, ...]] = set()
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        union = any(x in ("str", "list[str]") for x in loc)
        loc = tuple(x for x in loc if x not in ("str", "list[str]"))
        message = err["msg"].removeprefix("Value error, ")
        hint = _HINTS.get(err["type"], "")
        secret = any(isinstance(x, str) and x in _SECRET_KEYS for x in loc)
        if union:
            # Pydantic reports a str|list[str] mismatch once per member: report it once.
            if loc in unions_seen:
                continue
            unions_seen.add(loc)
            if err["type"] in ("string_type", "list_type"):
                message, hint = "should be a string or a list of strings", 'e.g. "entrance" or ["entrance", "fitting"]'
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            known = _known_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + \
                (f"keys allowed here: {', '.join(known)}" if known else hint)
        elif "input" in err and err["type"] not in ("missing", "value_error") \
                and not isinstance(err["input"], dict | list) and not secret:
            # (value_error messages come from our validators, which already name the value.)
            message = f"{message} (got {err['input']!r})"
        env_var = (from_env or {}).get(tuple(x for x in loc if isinstance(x, str)))
        if env_var:
            message = f"{message} (value from the environment variable {env_var})"
        issues.append(ConfigIssue(_loc_to_path(loc, data), message, hint))
    seen: set[tuple[str, str]] = set()
    unique = []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            unique.append(issue)
    return unique



def _apply_env(data: dict[str, Any], model: type[BaseModel], env: dict[str, str], path: list[str],
               applied: dict[tuple[str, ...], str] | None = None) -> dict[tuple[str, ...], str]:
    """Overlay INSTORE_EDGE_<SECTION>_<KEY> environment values on scalar keys of table sections.

    Returns {key path: variable} for the values taken from the environment. An empty variable is unset.
    """
    applied = {} if applied is None else applied
    for name, field in model.model_fields.items():
        annotation = field.annotation
        key_path = [*path, name]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub = data.get(name)
            if sub is None:
                sub = {}
            if isinstance(sub, dict):
                _apply_env(sub, annotation, env, key_path, applied)
                if sub:
                    data[name] = sub
            continue
        var = ENV_PREFIX + "_".join(key_path).upper()
        if env.get(var):
            data[name] = env[var]
            applied[tuple(key_path)] = var
    return applied


def parse_config(data: dict[str, Any], source: str = "<config>", env: dict[str, str] | None = None) -> Config:
    """Validate a config mapping; raise ConfigError listing every problem."""
    data = copy.deepcopy(data)  # the environment overlay must not write into the caller's tables
    from_env = _apply_env(data, Config, dict(os.environ) if env is None else env, [])
    issues: list[ConfigIssue] = []
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        issues = _issues_from_validation(exc, data, from_env)
    issues += cross_check(data)
    issues += check_secrets(data, from_env)
    if issues:
        raise ConfigError(source, issues)
    return cfg


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; relative db paths are taken from the config's folder."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(p), [ConfigIssue("(file)", "file not found",
                                               "copy config/store.example.toml and edit it")]) from None
    except OSError as exc:
        raise ConfigError(str(p), [ConfigIssue("(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), [ConfigIssue("(file)", "not UTF-8 text", "save the file as UTF-8")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [ConfigIssue("(syntax)", str(exc),
                                               "check quotes, brackets and '=' on that line")]) from None
    db = data.get("db")
    if isinstance(db, dict) and isinstance(db.get("path"), str) and not os.path.isabs(db["path"]) \
            and db["path"] != ":memory:" and not db["path"].startswith("file:"):
        data = {**data, "db": {**db, "path": str((p.parent / db["path"]).resolve())}}
    return parse_config(data, str(p), env)
