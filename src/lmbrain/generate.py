"""Text generation from a prompt, for every model: greedy decoding and nucleus (top-p) sampling.

A quick sanity check of a trained or loaded model, and the proposal mechanism of the decoder::

    python -m lmbrain.generate --model lstm --prompt "but soft what light" --words 20
    python -m lmbrain.generate --model results/models/transformer --method nucleus --top-p 0.9 --seed 1

``--model`` is a model name under ``--models-dir`` (default ``results/models``) or a model folder.
Word-level models generate word by word over their vocabulary (``<unk>`` is never proposed);
HuggingFace models generate sub-word tokens, which are joined and split back into words.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from . import LmbrainError
from .corpus import tokenize
from .models import HuggingFaceLM, LanguageModel, ModelError, WordLanguageModel, load_model


def nucleus_filter(logprobs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the smallest set of words whose probability mass reaches ``top_p`` (most likely first)."""
    order = np.argsort(-logprobs, kind="stable")
    p = np.exp(logprobs[order] - logprobs[order[0]])
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
    return order[: max(1, keep)]


def generate(lm: LanguageModel, prompt: list[str], n_words: int = 20, method: str = "greedy", top_p: float = 0.9,
             temperature: float = 1.0, seed: int = 0, context: int = 64) -> list[str]:
    """Continue ``prompt`` (words) by ``n_words`` words; deterministic for a given seed."""
    if method not in ("greedy", "nucleus"):
        raise ModelError(f"generation method must be 'greedy' or 'nucleus', not {method!r}")
    if not 0 < top_p <= 1:
        raise ModelError(f"top_p must be in (0, 1], not {top_p}")
    if temperature <= 0:
        raise ModelError(f"temperature must be positive, not {temperature}")
    prompt = [w.lower() for w in prompt]
    if isinstance(lm, HuggingFaceLM):
        return _generate_hf(lm, prompt, n_words, method, top_p, temperature, seed)
    if not isinstance(lm, WordLanguageModel):
        raise ModelError(f"cannot generate with {type(lm).__name__}")
    rng = np.random.default_rng(seed)
    words = list(prompt)
    limit = min(context, lm.max_tokens() or context)
    for _ in range(n_words):
        logprobs, vocab = lm.word_logprobs(words[-limit:])
        logprobs = logprobs.astype(np.float64) / temperature
        logprobs[0] = -np.inf  # never propose <unk>
        if method == "greedy":
            nxt = int(np.argmax(logprobs))
        else:
            keep = nucleus_filter(logprobs, top_p)
            p = np.exp(logprobs[keep] - logprobs[keep].max())
            nxt = int(keep[rng.choice(len(keep), p=p / p.sum())])
        words.append(vocab[nxt])
    return words[len(prompt):]


def _generate_hf(lm: HuggingFaceLM, prompt, n_words, method, top_p, temperature, seed):
    ids = list(lm.prefix) + [t for w in lm.encode(prompt) for t in w]
    torch.manual_seed(seed)
    kwargs = dict(max_new_tokens=4 * n_words + 8, pad_token_id=lm.tokenizer.eos_token_id)
    if method == "greedy":
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, top_p=top_p, temperature=temperature, top_k=0)
    with torch.inference_mode():
        out = lm.model.generate(torch.as_tensor([ids], device=lm.device), **kwargs)
    text = lm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    return [w for w, _ in tokenize(text)][:n_words]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmbrain.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model name (under --models-dir) or model folder")
    ap.add_argument("--prompt", default="", help="prompt text")
    ap.add_argument("--words", type=int, default=20, help="number of words to generate")
    ap.add_argument("--method", choices=["greedy", "nucleus"], default="greedy")
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models-dir", default="results/models")
    args = ap.parse_args(argv)
    folder = Path(args.model) if Path(args.model).is_dir() else Path(args.models_dir) / args.model
    try:
        if not (folder / "config.json").exists():
            raise ModelError(f"{folder}: no trained model here (run `snakemake {folder}/config.json` first, or "
                             "pass a model folder)")
        lm = load_model(folder)
        prompt = [w for w, _ in tokenize(args.prompt)]
        words = generate(lm, prompt, args.words, args.method, args.top_p, args.temperature, args.seed)
    except LmbrainError as exc:
        print(f"lmbrain: {exc}", file=sys.stderr)
        return 1
    print(" ".join(prompt + ["|"] + words) if prompt else " ".join(words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
