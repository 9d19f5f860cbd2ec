"""Feature-extraction benchmark: the exact fast path against the one-window reference, in one run.

    python benchmarks/features.py                          # the default config's trained model types
    python benchmarks/features.py --models lstm transformer --words 600 --ref-words 60
    python benchmarks/features.py --models smollm2 --words 300 --ref-words 8 --device cuda

For each model (the architectures of ``config/config.yaml``, randomly initialised: speed does not
depend on training; ``smollm2`` is the pip-packaged SmolLM2-135M GGUF), a story of ``--words``
Shakespeare words goes through :func:`lmbrain.features.iter_features` at every context length, and
``--ref-words`` words spread evenly over the same story go through
:func:`lmbrain.features.reference_features` (one forward pass per word and k). Printed per model:
words per second (all k) of each path, their ratio, the largest relative difference between the two
on the reference words, and the tokens per second of the fast path (used to project the time for a
real dataset). Not a timed test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from lmbrain.corpus import fetch_shakespeare, text_words  # noqa: E402
from lmbrain.features import iter_features, reference_features  # noqa: E402
from lmbrain.modelspec import TRAINED_TYPES, check_models  # noqa: E402
from lmbrain.models import (  # noqa: E402
    SMOLLM2_GGUF, Vocabulary, WordLanguageModel, build_model, load_huggingface, smollm2_gguf,
)


class _StubTokenizer:
    """Word -> 1-3 stable pseudo sub-word ids (speed runs of a randomly initialised HF model)."""

    bos_token_id = 0
    eos_token_id = 0

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def __call__(self, text, add_special_tokens=False):
        import zlib

        h = zlib.crc32(text.encode())
        n = 1 + (len(text) > 7) + (len(text) > 10)
        return {"input_ids": [1 + (h * (i + 1)) % (self.vocab_size - 1) for i in range(n)]}


def random_smollm2(name, device):
    """A randomly initialised Llama with SmolLM2-135M's shape (for machines without the GGUF file)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmbrain.models import HuggingFaceLM

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      tie_word_embeddings=True, attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    return HuggingFaceLM(model, _StubTokenizer(cfg.vocab_size), name=name, device=device)


def make_model(name, spec, vocab_words, device, random_hf=False):
    if spec["type"] == "huggingface" and random_hf:
        return random_smollm2(name, device)
    if spec["type"] == "huggingface":
        folder = smollm2_gguf(ROOT / "data" / "cache")
        return load_huggingface({"path": str(folder), "gguf_file": SMOLLM2_GGUF, "prepend_bos": True}, name=name,
                                device=device)
    vocab = Vocabulary.build(vocab_words, min_count=spec["min_count"], max_size=spec["max_vocab"])
    return WordLanguageModel(build_model(spec, len(vocab), seed=0), vocab, name=name, device=device)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench(lm, words, ks, layers, ref_words, max_batch_tokens, precision, device):
    n_tokens = 0
    # fast path (all words, all k)
    word_ids = lm.encode(words)
    K = min(max(ks), len(words))
    for s in range(len(words)):
        n_tokens += len(lm.prefix) + sum(len(w) for w in word_ids[s: s + K])
    sync(device)
    t0 = time.perf_counter()
    fast = {k: {} for k in ks}
    for k, start, arrays in iter_features(lm, words, ks, layers, True, max_batch_tokens=max_batch_tokens,
                                         precision=precision):
        for name, a in arrays.items():
            fast[k].setdefault(name, {})[start] = a
    sync(device)
    t_fast = time.perf_counter() - t0
    # reference on evenly spread words
    idx = np.unique(np.linspace(0, len(words) - 1, ref_words).round().astype(int))
    t0 = time.perf_counter()
    refs = {(i, k): reference_features(lm, words, int(i), k, layers, True) for i in idx for k in ks}
    sync(device)
    t_ref = time.perf_counter() - t0
    worst = 0.0
    for k in ks:
        for name, blocks in fast[k].items():
            arr = np.concatenate([blocks[s] for s in sorted(blocks)])
            ref = np.stack([refs[(i, k)][name] for i in idx])
            worst = max(worst, float(np.abs(arr[idx] - ref).max() / max(np.abs(ref).max(), 1e-12)))
    return {"fast_wps": len(words) / t_fast, "ref_wps": len(idx) / t_ref, "t_fast": t_fast, "t_ref": t_ref,
            "n_ref": len(idx), "tokens_per_s": n_tokens / t_fast, "max_rel_diff": worst}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="model names of config/config.yaml (default: trained types)")
    ap.add_argument("--words", type=int, default=600, help="story length in words")
    ap.add_argument("--ref-words", type=int, default=40, help="words run through the reference")
    ap.add_argument("--ks", type=int, nargs="*", default=None, help="context lengths (default: the config's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--max-batch-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--random-hf", action="store_true",
                    help="huggingface models: a random Llama of SmolLM2-135M's shape instead of the GGUF weights")
    ap.add_argument("--layers", type=int, nargs="*", default=None, help="override the models' layers")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = check_models(cfg)
    # the default: the trained types (the planted control needs the demo's topic model; huggingface: --models)
    names = args.models or [m for m, s in models.items() if s["type"] in TRAINED_TYPES]
    unusable = [m for m in names if m not in models or models[m]["type"] == "planted"]
    if unusable:
        raise SystemExit(f"--models: {', '.join(unusable)} cannot be benchmarked (use model names of "
                         f"config/config.yaml of a trained or huggingface type: {', '.join(models)})")
    archive = fetch_shakespeare(ROOT / "data" / "cache")
    story = text_words(archive, "romeo_and_juliet")[: args.words]
    corpus = text_words(archive, "hamlet") + text_words(archive, "othello")
    print(f"story: {len(story)} words; device {args.device}; torch threads {torch.get_num_threads()}")
    print(f"{'model':<12} {'ks':<22} {'fast w/s':>9} {'ref w/s':>9} {'ratio':>7} {'fast tok/s':>11} {'max rel diff':>12}")
    for name in names:
        spec = models[name]
        ks = args.ks or spec["context_lengths"] or cfg["features"]["context_lengths"]
        lm = make_model(name, spec, corpus, args.device, args.random_hf)
        layers = args.layers if args.layers is not None else spec["layers"]
        r = bench(lm, story, sorted(ks), layers, args.ref_words, args.max_batch_tokens, args.precision,
                  args.device)
        print(f"{name:<12} {','.join(map(str, sorted(ks))):<22} {r['fast_wps']:9.1f} {r['ref_wps']:9.2f} "
              f"{r['fast_wps'] / r['ref_wps']:6.1f}x {r['tokens_per_s']:11.0f} {r['max_rel_diff']:12.1e}", flush=True)


if __name__ == "__main__":
    main()
