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


def test_a_built_wheel_works_outside_the_checkout(tmp_path):
    """Issue 17: a wheel held only .py files (the schema was an unpackaged symlink, py.typed missing), so after
    `pip install .` the commands failed with FileNotFoundError. Build it, install it away from the checkout,
    and run the command line and a config load from there."""
    import os
    import subprocess
    import sys
    import zipfile

    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(dist.glob("lmbrain-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmbrain/config.schema.yaml" in names and "lmbrain/py.typed" in names
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    away = tmp_path / "elsewhere"
    away.mkdir()
    where = subprocess.run([sys.executable, "-c", "import lmbrain; print(lmbrain.__file__)"], cwd=away, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    helped = subprocess.run([sys.executable, "-m", "lmbrain", "demo", "--help"], cwd=away, env=env,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "--config" in helped.stdout, helped.stderr[-2000:]
    load = ("from lmbrain.config import load_config, resolve; "
            f"s = resolve(load_config({str(ROOT / 'config' / 'config.yaml')!r})); print(sorted(s.models))")
    loaded = subprocess.run([sys.executable, "-c", load], cwd=away, env=env, capture_output=True, text=True)
    assert loaded.returncode == 0 and "lstm" in loaded.stdout, loaded.stderr[-2000:]
