"""Config validation: the schema catches typos and bad values, naming the key; defaults are filled."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmbrain.config import ConfigError, load_config, resolve, validate_config

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


def test_schema_is_package_data_not_a_link():
    """Issue 17: the schema is a real file inside the package (a wheel carries it), listed as package data."""
    from lmbrain.config import SCHEMA_PATH

    assert SCHEMA_PATH.is_file() and not SCHEMA_PATH.is_symlink()
    assert "config.schema.yaml" in (ROOT / "pyproject.toml").read_text()
    assert (SCHEMA_PATH.parent / "py.typed").is_file()


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["demo"].update(trw_min=64, trw_max=8), "demo.trw_min (64) must be at most demo.trw_max (8)"),
        (lambda c: c["demo"].update(snr_min=2.0, snr_max=1.0), "demo.snr_min (2.0) must be at most demo.snr_max"),
        (lambda c: c["models"]["lstm"].update(lr="fast"), "model 'lstm': lr must be a positive number"),
        (lambda c: c["models"]["lstm"].update(lr=-1), "model 'lstm': lr must be a positive number"),
        (lambda c: c["models"]["rnn"].update(dropout=1.5), "model 'rnn': dropout must be a number in [0, 1)"),
        (lambda c: c["models"]["lstm"].update(max_vocab=0), "model 'lstm': max_vocab must be an integer >= 2"),
        (lambda c: c["models"]["transformer"].update(max_positions=100), "max_positions 100 is shorter"),
        (lambda c: c["trw"].update(sentence_gap=2.0, paragraph_gap=1.0), "trw.sentence_gap"),
        (lambda c: c["decoding"].update(stories=["../x"]), "decoding.stories.0"),
        (lambda c: c["stories"].update(test=["a/b"]), "stories.test.0"),
        (lambda c: c.update(use_models=["lstm"]) or c["encoding"].update(features=["heads"]),
         "encoding.features ['heads'] gives model 'lstm' (type lstm) nothing to fit"),
        (lambda c: c["decoding"].update(models=["nope"]), "decoding names models nope"),
    ],
)
def test_resolve_refuses_configs_that_would_fail_later(edit, expected):
    """Issue 18: configs that passed the schema and failed (or misled) in a job now stop at start."""
    cfg = base()
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    assert expected in str(err.value)


def test_resolve_gives_each_model_its_context_lengths_and_layers():
    cfg = base()
    cfg["models"]["lstm"]["context_lengths"] = [8, 1, 2]
    s = resolve(cfg)
    assert s.models["lstm"].context_lengths == (1, 2, 8)
    assert s.models["rnn"].context_lengths == tuple(cfg["features"]["context_lengths"])
    assert s.models["transformer"].layers == (0, 1, 2) and s.encoding_features["transformer"] == ("pooled-L2",)
    assert s.models["smollm2"].layers == (9,) and s.trw_feature("smollm2") == "pooled-L9"
    assert s.corpus.exclude == ("romeo_and_juliet",) and s.corpus.cache_dir == "data/cache"
    assert s.decoding_stories == ("romeo_and_juliet_04",) and s.decoding_models == ("transformer",)
    assert s.trw.truth == "data/demo/ground_truth.tsv"


def test_job_settings_round_trip_through_json():
    from lmbrain.config import from_json, to_json

    s = resolve(base())
    for model in s.models:
        for make in (s.train_job, s.feature_job, s.encoding_job, s.trw_job, s.decoder_job, s.decode_job,
                     s.pretrained_job):
            if make in (s.train_job,) and model not in s.trained_models:
                continue
            job = make(model)
            assert from_json(type(job), to_json(job)) == job
    assert from_json(type(s.demo_job()), to_json(s.demo_job())) == s.demo_job()


def test_an_unknown_key_lists_that_levels_keys_not_the_schema(tmp_path):
    """A misspelt key prints the message and the allowed keys at that level, not the whole schema."""
    cfg = base()
    cfg["encoding"]["alpahs"] = [1.0]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    proc = subprocess.run([snakemake, "-n", "--configfile", str(path), "--directory", str(tmp_path), "-s",
                           str(ROOT / "Snakefile")], cwd=tmp_path, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown key 'encoding.alpahs' (allowed here: alphas, block, cv_folds" in out
    assert "$schema" not in out and "additionalProperties" not in out and len(out.splitlines()) < 40, out


def test_workflow_runs_the_cross_field_checks_at_start(tmp_path):
    """Issue 17: the workflow used snakemake's schema validation only; min_words >= max_words passed it."""
    cfg = base()
    cfg["demo"].update(min_words=900, max_words=400)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    proc = subprocess.run([snakemake, "-n", "--configfile", str(path), "--directory", str(tmp_path), "-s",
                           str(ROOT / "Snakefile")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "demo.min_words (900) must be smaller than demo.max_words (400)" in proc.stdout + proc.stderr


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


# -- issue 16: several subjects, regions of interest ------------------------------------------------------
def test_subjects_default_to_the_demo_subjects_and_truth_is_per_subject():
    from lmbrain.config import demo_subject_ids

    s = resolve(base())
    assert s.subjects == ("DEMO01", "DEMO02") == s.demo.subjects
    assert demo_subject_ids("DEMO09", 3) == ["DEMO09", "DEMO10", "DEMO11"] and demo_subject_ids("S", 2) == ["S", "S2"]
    # the first subject keeps the one-subject demo's answer (and job settings); the others have their own
    assert s.trw_job("planted", "DEMO01") == s.trw_job("planted")
    assert s.trw_job("planted", "DEMO01").trw.truth == "data/demo/ground_truth.tsv"
    assert s.trw_job("planted", "DEMO02").trw.truth == "data/demo/ground_truth_DEMO02.tsv"
    cfg = base()
    cfg["trw"] = {"truth": "answers/{subject}.tsv"}
    assert resolve(cfg).truth_file("DEMO02") == "answers/DEMO02.tsv"
    assert resolve(cfg).trw.truth == "answers/DEMO01.tsv"
    cfg = base()
    cfg["demo"]["build"] = False
    with pytest.raises(ConfigError, match="subjects: list the subject ids"):
        resolve(cfg)
    cfg = base()
    cfg["subjects"] = ["DEMO01", "group"]
    with pytest.raises(ConfigError, match="subjects: 'group' is reserved"):
        resolve(cfg)
    for name in ("scrambled", "features", "models"):  # every folder results/ has beside the subjects'
        cfg["subjects"] = ["DEMO01", name]
        with pytest.raises(ConfigError, match=f"subjects: '{name}' is reserved .*results/{name}/"):
            resolve(cfg)
    cfg = base()
    cfg["subjects"] = ["DEMO01", "DEMO03"]
    with pytest.raises(ConfigError, match="DEMO03 not made by the demo.*demo.n_subjects 2"):
        resolve(cfg)
    # a root is in a rule's file pattern: braces there read as a wildcard ("Not all output, log and benchmark
    # files of rule demo_dataset contain the same wildcards" was Snakemake's own message)
    for build in (True, False):
        cfg = base()
        cfg["dataset"]["root"], cfg["demo"]["build"], cfg["subjects"] = "data/{x}demo", build, ["DEMO01"]
        with pytest.raises(ConfigError, match=r"dataset.root 'data/\{x\}demo' contains braces .*rename the folder"):
            resolve(cfg)


def test_rois_settings_round_trip_and_defaults():
    from lmbrain.config import GroupJob, RoisJob, from_json, to_json

    s = resolve(base())
    r = s.rois
    assert r.source == "pycortex" and r.names == ("AC", "Broca", "sPMv", "EBA", "PPA", "IPS", "FEF", "RSC")
    assert s.group.order == (("AC",), ("Broca", "sPMv"), ("IPS", "FEF", "RSC")) and r.min_voxels == 8
    assert s.group.n_perm == 10000 and r.n_boot == 1000
    assert r.cache_dir == s.demo.cache_dir
    assert from_json(RoisJob, to_json(s.rois_job())) == s.rois_job()
    assert from_json(GroupJob, to_json(s.group_job())) == s.group_job()


@pytest.mark.parametrize(
    "rois, expected",
    [
        ({"order": [["AC"], ["Broca", "AC"]]}, "rois.order: ROI(s) AC appear more than once"),
        ({"order": [["AC", "Broca"]]}, "rois.order needs at least two groups"),
        ({"names": ["AC", "IPS"], "order": [["AC"], ["FEF"]]}, "rois.order names ROI(s) FEF that are not in rois.names"),
        ({"source": "labels"}, "rois.label_image and rois.label_table must name"),
        ({"source": "atlas"}, "rois.source"),
        ({"overlap": "union"}, "rois.overlap"),
        ({"min_voxels": 0}, "rois.min_voxels"),
    ],
)
def test_bad_rois_config_names_the_key(rois, expected):
    cfg = base()
    cfg["rois"] = rois
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    assert expected in str(err.value)


def test_unknown_pycortex_roi_stops_at_start_listing_the_available_ones():
    pytest.importorskip("cortex")
    from lmbrain.config import check_rois

    cfg = base()
    cfg["rois"] = {"names": ["AC", "Wernicke"], "order": []}
    with pytest.raises(ConfigError) as err:
        check_rois(resolve(cfg))
    msg = str(err.value)
    assert msg.startswith("rois.names: Wernicke not drawn in pycortex subject S1") and "available: " in msg
    assert "IPS" in msg and "Broca" in msg
    check_rois(resolve(base()))  # the defaults are all drawn in S1


def test_label_table_names_are_checked_at_start(tmp_path):
    from lmbrain.config import check_rois

    (tmp_path / "labels.tsv").write_text("index\tname\n1\tAC\n2\tIPS\n")
    cfg = base()
    cfg["rois"] = {"source": "labels", "label_image": str(tmp_path / "{subject}.nii.gz"),
                   "label_table": str(tmp_path / "labels.tsv"), "names": ["AC", "PPA"], "order": []}
    with pytest.raises(ConfigError, match=r"rois.names: PPA not in the label table .*labels.tsv; available: AC, IPS"):
        check_rois(resolve(cfg))


@pytest.mark.parametrize("overlay", sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "config.yaml"))
def test_every_shipped_overlay_validates_over_the_default_config(overlay):
    """The config files the README and benchmarks name (real size, TRW validation, Tang et al.'s decoding
    settings) are valid overlays of config/config.yaml: schema and cross-field checks."""
    from lmbrain.config import load_config, resolve

    cfg = load_config(ROOT / "config" / "config.yaml", ROOT / "config" / overlay)
    resolve(cfg)


def test_schema_read_with_libyaml_equals_the_python_reader():
    """load_schema uses libyaml's safe loader when PyYAML has it (every workflow start reads the schema): the
    same schema, value for value and type for type, as PyYAML's pure-Python safe loader gives."""
    import yaml

    from lmbrain.config import SCHEMA_PATH, load_schema

    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        expected = yaml.safe_load(fh)
    got = load_schema()
    assert got == expected
    assert repr(got) == repr(expected)  # same types (1 vs 1.0 vs True) and key order
