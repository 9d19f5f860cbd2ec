"""Config validation: the schema catches typos and bad values, naming the key; defaults are filled."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmbrain.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"


def base():
    with open(DEFAULT) as fh:
        return yaml.safe_load(fh)


def test_default_config_is_valid():
    cfg = load_config(DEFAULT)
    assert cfg["dataset"]["layout"] == "lebel2023"
    assert cfg["tr"] == 2.0
    assert cfg["stories"]["train"] == "all"


def test_defaults_are_filled():
    cfg = base()
    del cfg["demo"]
    out = validate_config(cfg)
    assert out["demo"]["n_repeats"] == 3
    assert out["demo"]["voxel_stride"] == [2, 4, 4]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c.update(tr_s=2.0), "unknown key 'tr_s'"),
        (lambda c: c["dataset"].update(layuot="bids"), "unknown key 'dataset.layuot'"),
        (lambda c: c["demo"].update(n_stroies=3), "unknown key 'demo.n_stroies'"),
        (lambda c: c["dataset"].update(layout="nwb"), "dataset.layout"),
        (lambda c: c.update(tr=-1), "tr"),
        (lambda c: c["stories"].update(train="some"), "stories.train"),
        (lambda c: c.update(subjects=[]), "subjects"),
        (lambda c: c.pop("dataset"), "'dataset' is a required property"),
        (lambda c: c.update(seed="x"), "seed"),
        (lambda c: c["demo"].update(min_words=900, max_words=400), "demo.min_words"),
    ],
)
def test_bad_config_names_the_key(edit, expected):
    cfg = base()
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert expected in str(err.value)


def test_later_files_override(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("seed: 7\ndemo:\n  n_repeats: 4\n")
    cfg = load_config(DEFAULT, extra)
    assert cfg["seed"] == 7 and cfg["demo"]["n_repeats"] == 4 and cfg["demo"]["n_topics"] == 16


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_package_schema_is_the_workflow_schema():
    from lmbrain.config import SCHEMA_PATH

    assert SCHEMA_PATH.read_bytes() == (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_bytes()


def test_snakemake_rejects_unknown_key_at_start(tmp_path):
    """The workflow itself validates: a typo stops `snakemake -n` with a message naming the key."""
    cfg = base()
    cfg["demo"]["n_stroies"] = 3
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    proc = subprocess.run([snakemake, "-n", "--configfile", str(path), "--directory", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "n_stroies" in proc.stdout + proc.stderr
