"""Training the word-level language models on word lists (the science of the ``train_model`` stage).

- Vocabulary: words seen ``min_count`` times or more (at most ``max_vocab``), others ``<unk>``.
- Optimisation: AdamW, cosine learning-rate decay, gradient clipping. Recurrent models use
  truncated backpropagation through time (``seq_len`` steps, state carried across chunks of
  ``batch_size`` parallel streams); attention models train on shuffled ``seq_len``-word sequences.
- Each epoch logs train loss and held-out perplexity and, given a ``checkpoint_dir``, writes a
  resumable checkpoint there (safetensors + JSON, never pickle): an interrupted run continues from
  its last finished epoch and ends with the same weights as an uninterrupted one.
- Deterministic on CPU for a fixed seed (every epoch reseeds from ``(seed, epoch)``).

:func:`train_model` takes a model spec (a plain dict: ``ModelSpec.as_dict()``) and word lists and
returns a :class:`TrainingResult`; writing the model folder, the table and the figure is the
stage's (:func:`lmbrain.stages.models.train_model`). The corpus itself (texts, held-out split) is
:mod:`lmbrain.corpus` and :func:`split_texts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .corpus import CorpusError
from .io import atomic_path, write_text
from .modelspec import ModelError
from .networks import WordModel, build_model
from .vocab import Vocabulary

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA GPU is visible (use device: auto or cpu)")
    return torch.device(device)


# ------------------------------------------------------------------------------------------
def split_texts(texts: dict[str, list[str]], heldout_fraction: float) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``({text: training words}, {text: held-out words})``: the last ``heldout_fraction`` of every text is held out."""
    train, held = {}, {}
    for name, words in texts.items():
        cut = len(words) - int(round(len(words) * heldout_fraction))
        train[name], held[name] = words[:cut], words[cut:]
    return train, held


def split_corpus(texts: dict[str, list[str]], heldout_fraction: float) -> tuple[list[str], list[str]]:
    """The last ``heldout_fraction`` of every text is held out; the rest is training text (word lists)."""
    train, held = split_texts(texts, heldout_fraction)
    return [w for words in train.values() for w in words], [w for words in held.values() for w in words]


def read_corpus(folder: str | os.PathLike) -> tuple[list[str], list[str], dict]:
    """``(train words, held-out words, info)`` from a corpus folder (``train.txt``, ``heldout.txt``, ``corpus.json``,
    as :func:`lmbrain.stages.models.prepare_corpus` writes it)."""
    folder = Path(folder)
    for name in ("train.txt", "heldout.txt", "corpus.json"):
        if not (folder / name).exists():
            raise CorpusError(f"{folder / name}: missing (run the prepare_corpus rule)")
    train = (folder / "train.txt").read_text(encoding="utf-8").split()
    held = (folder / "heldout.txt").read_text(encoding="utf-8").split()
    return train, held, json.loads((folder / "corpus.json").read_text())


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


@dataclass
class TrainingResult:
    """What :func:`train_model` returns: the trained network (on the CPU), its vocabulary and its history."""

    model: WordModel
    vocab: Vocabulary
    history: list[dict]  # one row per epoch: losses, perplexities, words, steps, seconds
    curve: list[list[float]] = field(default_factory=list)  # [step, mean training loss] about 200 times per run
    unigram_perplexity: float = float("nan")
    parameters: int = 0

    def table(self) -> pd.DataFrame:
        """The per-epoch history with the unigram baseline (``training.tsv``)."""
        table = pd.DataFrame(self.history)
        table["unigram_perplexity"] = self.unigram_perplexity
        return table


def train_model(spec: dict, train_words: list[str], heldout_words: list[str], seed: int = 0, device: str = "auto",
                progress: bool = False, name: str = "model", checkpoint_dir: str | os.PathLike | None = None
                ) -> TrainingResult:
    """Train one word-level model (spec: a model type's settings, ``ModelSpec.as_dict()``) on word lists.

    With ``checkpoint_dir``, each finished epoch is saved there and a checkpoint left by an
    interrupted run of the same spec, seed and corpus is resumed (the caller removes the folder once
    it has saved the result). Returns the trained model (moved to the CPU) with its vocabulary and
    per-epoch history.
    """
    from .io import progress_bar as tqdm

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
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    key = _spec_hash(spec, [seed, len(train_ids), len(vocab)])
    progress_state = {"epoch": 0, "step": 0, "history": [], "curve": [], "key": key}
    loaded = _load_checkpoint(ckpt, model, opt) if ckpt is not None and ckpt.exists() else None
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
        if ckpt is not None:
            _save_checkpoint(ckpt, model, opt, {"epoch": epoch, "step": step, "history": history, "curve": curve,
                                               "key": key})
    return TrainingResult(model=model.cpu(), vocab=vocab, history=history, curve=curve, unigram_perplexity=unigram,
                          parameters=n_params)


def remove_checkpoint(checkpoint_dir: str | os.PathLike) -> None:
    """Remove a checkpoint folder :func:`train_model` wrote (its two files, then the folder)."""
    ckpt = Path(checkpoint_dir)
    if not ckpt.exists():
        return
    for name in ("state.safetensors", "progress.json"):
        (ckpt / name).unlink(missing_ok=True)
    for leftover in ckpt.glob(".*.tmp*"):  # temporary files of a checkpoint write that was killed
        leftover.unlink(missing_ok=True)
    ckpt.rmdir()
