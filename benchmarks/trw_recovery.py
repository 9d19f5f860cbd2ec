"""TRW recovery study: how well each language model's temporal receptive windows match a planted answer.

    # the default demo (every model of the config, the planted ceiling and a context-free control)
    python benchmarks/trw_recovery.py --config config/config.yaml --out benchmarks/out/trw/default
    # more training data (~3k training TRs): the validation overlay
    python benchmarks/trw_recovery.py --config config/config.yaml config/trw-validation.yaml \\
        --out benchmarks/out/trw/3k --models-from benchmarks/out/trw/default
    # the second generator (benchmarks/simulate_trw.py: exponential windows over PPMI-SVD vectors)
    python benchmarks/trw_recovery.py --config config/config.yaml --simulate 9 \\
        --out benchmarks/out/trw/sim --models-from benchmarks/out/trw/default
    # the second generator at real size (~11k training TRs): stories from the real-size overlay's three
    # plays, which the models it trains leave out of their corpus
    python benchmarks/trw_recovery.py --config config/config.yaml config/trw-realsize.yaml --simulate 72 \\
        --out benchmarks/out/trw/sim-realsize --models lstm --no-scramble
    # the figure: recovery against training TRs, one line per model
    python benchmarks/trw_recovery.py --figure benchmarks/out/trw/default benchmarks/out/trw/3k \\
        --out benchmarks/out/trw/recovery_vs_trs.png

Each run goes through the pipeline's own stages (:func:`lmbrain.stages.features.extract_features`,
:func:`lmbrain.stages.encoding.encoding_model`, :func:`lmbrain.stages.trw.trw`) with the settings
of the given config files, into ``<out>/results`` (every stage's output is kept, so an interrupted
run resumes and a second run only recollects). Then, for every model:

- Spearman rho of each TRW estimate (``trw_words``, ``trw_peak``, ``k_best``, ``com_words``,
  ``scramble_index``, ``timescale_words``) with the planted window over all high-SNR signal voxels and
  over those significant at their best k (:func:`lmbrain.recovery.planted_recovery`);
- ``trw_centroid`` within quarters of the high-SNR signal voxels by fit quality (their best CV score;
  :func:`lmbrain.recovery.recovery_by_fit`): where the windows hold and where they do not;
- the model's context ceiling and the fraction of voxels at it; agreement of the scrambling classes
  with the planted classes (when ``trw.scramble``);
- wall-clock seconds of each stage.

Controls: ``planted`` (the demo generator's topic reader, demo only) or, with ``--simulate``, the
simulator's own states (``oracle``) as the positive ceiling; and a context-free negative control:
the ``--control`` model's (default: the first language model's) context-1 features copied to every
k with a jitter of 1% of their spread, through the same encoding and TRW stages.

Writes ``<out>/recovery.tsv`` (every model, estimate and voxel set), ``<out>/recovery_by_fit.tsv``
(every model, fit-quality quarter), ``<out>/summary.tsv`` (one row
per model: the primary estimate, ceilings, classes, times) and ``<out>/summary.md``. ``--simulate``
and ``--dataset`` runs reuse trained models from ``--models-from`` (trained on the same corpus).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

log = logging.getLogger("trw_recovery")

PRIMARY = ("trw_centroid", "trw_peak", "trw_words")


def _time(times: dict, key: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    times[key] = times.get(key, 0.0) + time.perf_counter() - t0
    return out


def merge_times(previous: dict, current: dict) -> dict:
    """The stage times of a resumed study: ``previous`` (an earlier run's times.json into the same ``--out``)
    updated by the stages this run timed. A resumed run skips the stages whose outputs exist, so their
    times are those of the run that made them; a stage timed again replaces its earlier time."""
    merged = {name: dict(stages) for name, stages in previous.items()}
    for name, stages in current.items():
        merged.setdefault(name, {}).update(stages)
    return merged


def prepare_models(cfg: dict, settings, layout, names, models_from: Path | None, times: dict) -> None:
    """Train (or copy from ``models_from``) the trained models, build planted/pretrained ones."""
    from lmbrain.stages.models import prepare_corpus, pretrained_model, train_model

    for name in names:
        spec = settings.model(name)
        target = Path(layout.model_dir(name))
        if (target / "config.json").exists():
            continue
        src = models_from / "results" / "models" / name if models_from else None
        if src is not None and (src / "config.json").exists() and spec.type != "planted":
            shutil.copytree(src, target, dirs_exist_ok=True)
            continue
        t = {}
        if spec.type in ("huggingface", "planted"):
            _time(t, "model", pretrained_model, settings.pretrained_job(name), target)
        else:
            if not (Path(layout.corpus_dir()) / "corpus.json").exists():
                prepare_corpus(settings.corpus_job(), layout.corpus_dir())
            _time(t, "model", train_model, settings.train_job(name), layout.corpus_dir(), target, progress=False)
        times.setdefault(name, {}).update(t)


def run_model(settings, layout, subject: str, name: str, times: dict, scramble: bool) -> pd.DataFrame:
    from lmbrain.stages.common import open_job_dataset, split_stories
    from lmbrain.stages.encoding import encoding_model
    from lmbrain.stages.features import extract_features
    from lmbrain.stages.trw import scrambled_features, trw

    t = times.setdefault(name, {})
    ds = open_job_dataset(settings.dataset)
    for story in ds.stories(subject):
        out = Path(layout.features_dir(name, story))
        if not out.exists():
            _time(t, "features", extract_features, settings.feature_job(name), story, layout.model_dir(name), out)
    feature = settings.trw_feature(name)
    enc = Path(layout.encoding_dir(subject, name, feature))
    if not (enc / "summary.tsv").exists():
        _time(t, "encoding", encoding_model, settings.encoding_job(name), subject, feature, enc, layout=layout)
    job = settings.trw_job(name)
    if not scramble:
        job = dataclasses.replace(job, trw=dataclasses.replace(job.trw, scramble=False))
    out = Path(layout.trw_dir(subject, name))
    if not (out / "voxels.tsv").exists():
        if job.trw.scramble:  # the test stories' scrambled versions (rule scrambled_features), timed with trw
            _, test = split_stories(ds, subject, settings.dataset)
            for story in test:
                if not Path(layout.scrambled_file(name, story)).exists():
                    _time(t, "trw", scrambled_features, settings.scramble_job(name), story, layout.model_dir(name),
                          layout.scrambled_file(name, story))
        _time(t, "trw", trw, job, subject, enc, out, layout=layout)
    return pd.read_csv(out / "voxels.tsv", sep="\t")


def context_free_control(settings, layout, subject: str, source: str, times: dict, seed: int = 0) -> str:
    """The ``source`` model's context-1 features at every k (1% jitter) through encoding and TRW, as
    model ``context_free`` (its own results folder); returns that name."""
    import h5py

    from lmbrain.encoding import parse_feature
    from lmbrain.stages.common import open_job_dataset
    from lmbrain.stages.encoding import encoding_model
    from lmbrain.stages.trw import trw

    name = "context_free"
    t = times.setdefault(name, {"source": source})
    feature = settings.trw_feature(source)
    kind, layer = parse_feature(feature)
    ks = list(settings.model(source).context_lengths)
    ds = open_job_dataset(settings.dataset)
    rng = np.random.default_rng(seed)
    cf = dataclasses.replace(layout, results=str(Path(layout.results) / "context_free"))
    t0, copied = time.perf_counter(), False
    for story in ds.stories(subject):
        dst = Path(cf.features_dir(source, story))
        if dst.exists():
            continue
        copied = True
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        src = Path(layout.feature_file(source, story, ks[0]))
        for k in ks:
            shutil.copy(src, tmp / f"k{k}.h5")
            with h5py.File(tmp / f"k{k}.h5", "r+") as fh:
                for key in list(fh.keys()):
                    if key in ("hidden", "pooled", "attention"):
                        def jitter(n, obj):
                            if isinstance(obj, h5py.Dataset):
                                x = obj[()]
                                obj[()] = x + 0.01 * x.std(0) * rng.standard_normal(x.shape)
                        fh[key].visititems(jitter)
                fh.attrs["context_length"] = k
        tmp.rename(dst)
    if copied:  # a resumed study that copies nothing keeps the time of the run that did
        t["features"] = time.perf_counter() - t0
    enc = Path(cf.encoding_dir(subject, source, feature))
    if not (enc / "summary.tsv").exists():
        _time(t, "encoding", encoding_model, settings.encoding_job(source), subject, feature, enc, layout=cf)
    out = Path(layout.trw_dir(subject, name))
    if not (out / "voxels.tsv").exists():
        job = settings.trw_job(source)
        job = dataclasses.replace(job, trw=dataclasses.replace(job.trw, scramble=False))
        _time(t, "trw", trw, job, subject, enc, out, layout=cf)
    return name


def oracle_control(root: Path, settings, layout, subject: str, times: dict) -> str:
    """The simulator's own states as features of a model ``oracle`` (positive control of ``--simulate``)."""
    import simulate_trw

    from lmbrain.stages.encoding import encoding_model
    from lmbrain.stages.trw import trw

    name = "oracle"
    t = times.setdefault(name, {})
    ks = sorted({int(k) for name_ in settings.models for k in settings.model(name_).context_lengths})
    if not Path(layout.features_dir(name, "x")).parent.exists():
        _time(t, "features", simulate_trw.oracle_features, root, Path(layout.results), ks, model=name)
    enc = Path(layout.encoding_dir(subject, name, "hidden-L1"))
    if not (enc / "summary.tsv").exists():
        _time(t, "encoding", encoding_model, settings.encoding_job(name), subject, "hidden-L1", enc, layout=layout)
    out = Path(layout.trw_dir(subject, name))
    if not (out / "voxels.tsv").exists():
        job = dataclasses.replace(settings.trw_job(name), feature="hidden-L1")
        job = dataclasses.replace(job, trw=dataclasses.replace(job.trw, scramble=False))
        _time(t, "trw", trw, job, subject, enc, out, layout=layout)
    return name


def collect(settings, layout, subject: str, names: list[str], times: dict,
            meta: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from lmbrain.recovery import planted_recovery, read_truth, recovery_by_fit

    truth = read_truth(settings.trw.truth)
    long, by_fit, rows = [], [], []
    for name in names:
        folder = Path(layout.trw_dir(subject, name))
        table = pd.read_csv(folder / "voxels.tsv", sep="\t")
        rec = planted_recovery(truth, table)
        rec.insert(0, "model", name)
        long.append(rec)
        get = rec.set_index(["voxels", "estimate"])
        row = {"model": name, **meta}
        for est in PRIMARY + ("k_best", "scramble_index", "timescale_words"):
            for vox, label in (("high-SNR signal voxels", "all"), ("high-SNR significant", "sig")):
                if (vox, est) in get.index:
                    row[f"{est}_{label}"] = round(float(get.loc[(vox, est), "spearman"]), 4)
                    if est == PRIMARY[0]:  # the voxels of the primary estimate (scramble_index may have fewer)
                        row[f"n_{label}"] = int(get.loc[(vox, est), "n"])
        fit = recovery_by_fit(truth, table, "trw_centroid")
        fit.insert(0, "model", name)
        by_fit.append(fit)
        # the primary estimate over the worst- and the best-fitted quarter of the high-SNR signal voxels
        row["trw_centroid_fit_q1"] = round(float(fit["spearman"].iloc[0]), 4)
        row["trw_centroid_fit_q4"] = round(float(fit["spearman"].iloc[-1]), 4)
        if "context_ceiling" in table:
            row["context_ceiling"] = int(table["context_ceiling"].iloc[0])
            row["at_ceiling"] = round(float(table["at_ceiling"].mean()), 4)
        conf = folder / "confusion.tsv"
        if conf.exists():
            c = pd.read_csv(conf, sep="\t", index_col=0).to_numpy()
            row["class_agreement"] = round(float(np.trace(c) / max(c.sum(), 1)), 4)
        for stage, sec in times.get(name, {}).items():
            if isinstance(sec, float):
                row[f"seconds_{stage}"] = round(sec, 1)
        rows.append(row)
    return pd.concat(long, ignore_index=True), pd.DataFrame(rows), pd.concat(by_fit, ignore_index=True)


def _markdown(table: pd.DataFrame) -> str:
    cells = [[str(c) for c in table.columns]] + [["" if pd.isna(v) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(table.columns))
    return "\n".join(lines) + "\n"


def figure(folders: list[Path], png: Path) -> None:
    """Recovery (the primary estimate, ``PRIMARY[0]``, over all high-SNR signal voxels and over the
    significant ones) against training TRs, one line per model."""
    from lmbrain.plots import _pyplot, save_figure

    frames = [pd.read_csv(Path(f) / "summary.tsv", sep="\t") for f in folders]
    data = pd.concat(frames, ignore_index=True)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, col, label in ((axes[0], f"{PRIMARY[0]}_all", "all high-SNR signal voxels"),
                           (axes[1], f"{PRIMARY[0]}_sig", "high-SNR voxels significant at their best k")):
        for i, (model, rows) in enumerate(data.groupby("model", sort=False)):
            rows = rows.sort_values("train_trs")
            style = "--" if model in ("planted", "oracle", "context_free") else "-"
            ax.plot(rows["train_trs"], rows[col], "o" + style, color=f"C{i % 10}", label=model)
        ax.set_xscale("log")
        ax.set_xlabel("training TRs")
        ax.set_title(label, fontsize=9)
        ax.axhline(0, color="0.6", lw=0.8)
    axes[0].set_ylabel(f"Spearman rho, {PRIMARY[0]} vs planted window")
    axes[0].legend(frameon=False, fontsize=7)
    fig.suptitle("TRW recovery against the amount of training data")
    fig.tight_layout()
    save_figure(fig, png)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", nargs="+", default=[str(ROOT / "config" / "config.yaml")])
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="*", default=None, help="models to run (default: use_models or all)")
    p.add_argument("--models-from", default=None, help="an earlier --out whose trained models to reuse")
    p.add_argument("--control", default=None, help="model whose context-1 features make the context-free control")
    p.add_argument("--simulate", type=int, default=None, help="stories of a benchmarks/simulate_trw.py dataset")
    p.add_argument("--sim-voxels", type=int, default=1500)
    p.add_argument("--sim-seed", type=int, default=7)
    p.add_argument("--no-scramble", action="store_true")
    p.add_argument("--figure", nargs="+", default=None, help="summary folders to plot (then --out is the PNG)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.figure:
        figure([Path(f) for f in a.figure], Path(a.out))
        return 0

    from lmbrain.config import load_config, resolve
    from lmbrain.demo import build_demo
    from lmbrain.layout import Layout

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(load_config(*a.config))
    cfg["device"] = cfg.get("device", "auto")
    cfg["encoding"]["maps"] = False
    times: dict = {}
    if a.simulate:
        import simulate_trw

        root = out / "data"
        if not (root / "sim.json").exists():
            # the stories come from the plays the config's models leave out of their corpus (the config's own
            # rule: corpus.exclude, null = demo.plays)
            plays = resolve(cfg, source=", ".join(a.config)).corpus.exclude
            if not plays:
                raise SystemExit("--simulate needs the plays the models leave out of their corpus: set corpus.exclude "
                                 "(or demo.plays with corpus.source shakespeare)")
            _time(times.setdefault("dataset", {}), "build", simulate_trw.simulate, root, a.simulate, a.sim_voxels,
                  a.sim_seed, plays=plays)
        sim = json.loads((root / "sim.json").read_text())
        cfg["dataset"]["root"] = str(root)
        cfg["demo"]["build"] = False
        cfg["subjects"] = [sim["subject"]]
        cfg["stories"] = {"train": "all", "test": sim["test_stories"]}
        cfg["trw"]["truth"] = str(root / "ground_truth.tsv")
        cfg["models"] = {k: v for k, v in cfg["models"].items() if v["type"] != "planted"}
        cfg["models"]["oracle"] = {"type": "lstm", "embedding_dim": 8, "hidden_dim": 8, "n_layers": 1, "layers": [1]}
    elif cfg["demo"]["build"]:
        cfg["dataset"]["root"] = str(out / "demo")
    if a.models is not None:
        cfg["use_models"] = list(a.models) + (["oracle"] if a.simulate else [])
    settings = resolve(cfg, source=", ".join(a.config))
    layout = Layout(results=str(out / "results"), logs=str(out / "logs"))
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    if cfg["demo"]["build"] and not (Path(cfg["dataset"]["root"]) / "demo.json").exists():
        _time(times.setdefault("dataset", {}), "build", build_demo, settings.demo_job(), progress=False)
    subject = settings.subjects[0]
    names = [m for m in settings.models if m != "oracle"]
    prepare_models(cfg, settings, layout, names, Path(a.models_from) if a.models_from else None, times)
    for name in names:
        log.info("model %s", name)
        run_model(settings, layout, subject, name, times, scramble=not a.no_scramble)
    if a.simulate:
        names.append(oracle_control(out / "data", settings, layout, subject, times))
    language = [m for m in names if settings.models[m].type not in ("planted",) and m != "oracle"]
    if language:
        names.append(context_free_control(settings, layout, subject, a.control or language[0], times))
    from lmbrain.stages.common import open_job_dataset, split_stories

    ds = open_job_dataset(settings.dataset)
    train, _ = split_stories(ds, subject, settings.dataset)
    meta = {"label": out.name, "train_trs": int(sum(len(ds.tr_times(subject, s)) for s in train)),
            "n_voxels": int(ds.n_voxels(subject))}
    if (out / "times.json").exists():  # a resumed study keeps the times of the stages it did not rerun
        times = merge_times(json.loads((out / "times.json").read_text()), times)
    rec, summary, by_fit = collect(settings, layout, subject, names, times, meta)
    rec.to_csv(out / "recovery.tsv", sep="\t", index=False, float_format="%.4g")
    by_fit.to_csv(out / "recovery_by_fit.tsv", sep="\t", index=False, float_format="%.4g")
    summary.to_csv(out / "summary.tsv", sep="\t", index=False)
    (out / "summary.md").write_text(_markdown(summary))
    (out / "times.json").write_text(json.dumps(times, indent=1, default=str))
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
