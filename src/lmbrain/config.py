"""Configuration loading and validation (the same schema the workflow validates against)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import LmbrainError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(LmbrainError, ValueError):
    """The configuration does not match the schema; the message names the offending key."""


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Fill ``default:`` values of object properties, recursively (as snakemake.utils.validate)."""
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema, fill defaults, and return a validated copy.

    Raises
    ------
    ConfigError
        Naming the offending key (e.g. ``demo.n_stroies``) and what is wrong with it.
    """
    config = copy.deepcopy(config) if config is not None else {}
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping, got {type(config).__name__}")
    schema = load_schema()
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = _key_path(err)
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                extra = sorted(set(err.instance) - set(allowed))
                prefix = f"{where}." if where != "<top level>" else ""
                for key in extra:
                    lines.append(f"unknown key '{prefix}{key}' (allowed here: {', '.join(allowed)})")
            else:
                lines.append(f"{where}: {err.message}")
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines))
    if config.get("demo", {}).get("min_words", 0) >= config.get("demo", {}).get("max_words", 1):
        raise ConfigError(f"{source}: demo.min_words must be smaller than demo.max_words")
    demo = config.get("demo", {})
    if demo.get("trw_min", 1) > demo.get("trw_max", 1):
        raise ConfigError(f"{source}: demo.trw_min must not exceed demo.trw_max")
    if demo.get("snr_min", 1) > demo.get("snr_max", 1):
        raise ConfigError(f"{source}: demo.snr_min must not exceed demo.snr_max")
    from .modelspec import ModelError, check_models

    try:
        check_models(config)
    except ModelError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config(*paths: str | os.PathLike) -> dict:
    """Read one or more YAML files (later ones merged over earlier ones) and validate them."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: configuration file not found")
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of keys to values")
        merged = merge(merged, data)
    return validate_config(merged, source=", ".join(str(p) for p in paths))


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge as Snakemake's --configfile does it (update wins; lists replace)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_config(config: dict, path: str | os.PathLike) -> None:
    """Write the run's effective configuration (defaults filled, config files merged) as YAML, atomically."""
    from . import __version__
    from .io import write_text

    header = f"# effective configuration of this lmbrain {__version__} run (defaults filled, --configfile merged)\n"
    write_text(path, header + yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=100))
