"""pyproject.toml and environment.yml list the same dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = dict(_split(r) for r in py["dependencies"] + py["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_deps = {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            for r in item.get("pip", []):
                if not r.startswith("-e"):
                    name, spec = _split(r)
                    conda_deps[name] = spec
            continue
        name, spec = _split(item)
        if name in ("python", "pip"):
            continue
        conda_deps[CONDA_NAMES.get(name, name)] = spec
    assert conda_deps == pip_deps
