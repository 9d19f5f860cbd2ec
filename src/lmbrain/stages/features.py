"""Stage ``extract_features``: one model's word features for one story at every context length.

Writes ``k<k>.h5`` for each of the model's context lengths (:func:`lmbrain.features.write_story_features`)
into the output folder, which appears only when every file is complete (:func:`lmbrain.io.atomic_dir`):
a job killed mid-write leaves nothing Snakemake could take for a result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..config import FeatureJob
from ..io import atomic_dir
from .common import open_job_dataset

log = logging.getLogger("lmbrain.features")


def extract_features(job: FeatureJob, story: str, model_dir, out_dir, progress: bool = False) -> dict:
    """Features of ``job.model`` for ``story`` at every k into ``out_dir`` (``k<k>.h5``)."""
    from ..features import write_story_features
    from ..models import load_model
    from ..training import pick_device

    spec, fc = job.model, job.features
    ks = list(spec.context_lengths)
    ds = open_job_dataset(job.dataset)
    words = ds.words(story)
    device = pick_device(job.device)
    t0 = time.time()
    lm = load_model(model_dir, device=device, name=spec.name)
    log.info("model %s (%s, %d layers) loaded on %s in %.1f s", spec.name, lm.kind, lm.n_layers, device,
             time.time() - t0)
    if hasattr(lm, "vocab"):
        log.info("story %s: %d words, %.1f%% in the model's vocabulary", story, len(words),
                 100 * lm.vocab.coverage(list(words["word"])))
    t0 = time.time()
    with atomic_dir(out_dir) as tmp:
        paths = {k: Path(tmp) / f"k{k}.h5" for k in ks}
        shapes = write_story_features(lm, story, words, paths,
                                      layers=None if spec.layers is None else list(spec.layers),
                                      attention=spec.attention_features, dtype=fc.dtype,
                                      max_batch_tokens=fc.max_batch_tokens, precision=fc.precision, progress=progress,
                                      pooled=fc.pooled, state_context=spec.get("state_context"))
    dt = time.time() - t0
    log.info("story %s: %d words x %d context lengths in %.1f s (%.0f words/s, all k); arrays: %s", story, len(words),
             len(ks), dt, len(words) / max(dt, 1e-9), ", ".join(f"{k}{tuple(v)}" for k, v in shapes.items()
                                                                  if k.startswith(("hidden", "pooled", "attention"))))
    return {"seconds": dt, "n_words": len(words), "context_lengths": ks, "shapes": shapes}
