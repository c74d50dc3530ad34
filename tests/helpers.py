"""The one way tests write and change a params.yaml."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml


def merged(base: dict, overrides: dict) -> dict:
    """A deep copy of `base` with `overrides` merged in: dicts key by key, any other value replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_params(root: Path, params: dict | str) -> Path:
    """`params` (a dict, or a file's text as it is) as `root`/params.yaml; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(params if isinstance(params, str) else yaml.safe_dump(copy.deepcopy(params), sort_keys=False))
    return path


def edit_params(root: Path, **overrides) -> dict:
    """`root`/params.yaml with `overrides` merged in (see `merged`), written back; returns the new params."""
    params = merged(yaml.safe_load((root / "params.yaml").read_text()), overrides)
    write_params(root, params)
    return params
