"""Configuration: one resolver for the workflow and the command line.

:func:`resolve` is the only way a configuration becomes settings. It

1. applies the ``compat`` preset (:data:`PRESETS`) to the keys it covers that the configuration
   leaves unset or null (a key given a value wins), then validates the configuration against the
   schema packaged with lmbrain (``lmbrain/config.schema.yaml``), filling every default from there and
   naming the offending key (with the keys allowed at that level) when something is wrong;
2. runs every cross-field check (``demo.min_words < demo.max_words``, model specs, encoding features
   each model can give, decoding models that exist, ...), so that a bad configuration stops at
   workflow start instead of in a job an hour later;
3. resolves what depends on several keys in one place: each model's context lengths and layers,
   the corpus exclusions and cache folder, the decoded stories, the planted-truth file;
4. returns frozen, typed settings: :class:`Settings` for the whole run, and one job-settings object per
   workflow rule (:meth:`Settings.encoding_job` etc.) holding exactly what that rule's stage reads.

The workflow's rules pass each job-settings object as a ``params:`` value (:func:`to_json`), so a
change to a setting reruns exactly the jobs that read it, and the rule's script rebuilds it
(:func:`from_json`) for the stage function (:mod:`lmbrain.stages`). The Snakefile and the ``lmbrain``
command line call the same :func:`resolve`. Nothing below the stage layer sees a configuration dict.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import LmbrainError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(LmbrainError, ValueError):
    """The configuration is invalid; the message names the offending key."""


# ------------------------------------------------------------------------------------------
# Schema validation
def load_schema() -> dict:
    # libyaml's loader where PyYAML has it (the same safe resolvers): every workflow start reads the schema
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Fill ``default:`` values of object properties, recursively (as snakemake.utils.validate)."""
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)


#: ``compat:`` presets: the settings that reproduce a reference implementation, as ``(section, key): value``.
#: ``huth2023``: the Huth lab's released code (deep-fMRI-dataset, the LeBel et al. 2023 dataset's encoding
#: models; semantic-decoding, Tang et al. 2023), item by item in the README's "Differences from the
#: reference code": its 7 non-word labels, delays after stacking the stories, the selection score of
#: ``bootstrap_ridge(use_corr=False)`` (deep-fMRI-dataset's signed-root R2), every alpha of its grid
#: ``logspace(1, 3, 10)`` (squared: lmbrain's penalty convention), phones counted with silences, word counts
#: rounded per TR, the word-rate model delayed across stories, and BERTScore with idf weights.
PRESETS = {
    "huth2023": {
        ("dataset", "non_words"): "huth",
        ("encoding", "delays_across_stories"): True,
        ("encoding", "score"): "huth_r2",
        ("encoding", "search"): "grid",
        ("encoding", "alphas"): [float(a) for a in (10.0 ** (2 * (1 + 2 * i / 9)) for i in range(10))],
        ("encoding", "phones_include_silence"): True,
        ("decoding", "rate_rounding"): "per_tr",
        ("decoding", "rate_delays_across_stories"): True,
        ("decoding", "bertscore_idf"): True,
    },
}
#: The keys a preset can set: null there means "lmbrain's default, or the preset's value".
PRESET_KEYS = sorted({key for preset in PRESETS.values() for key in preset})


def _apply_preset(config: dict) -> None:
    """Set the ``compat`` preset's values of the keys the configuration leaves unset or null (a key given a
    value wins over the preset), then drop the remaining nulls of those keys so that their schema
    defaults (lmbrain's) fill in. Runs before the defaults are filled; an unknown preset name is left
    to the schema check."""
    preset = PRESETS.get(config.get("compat")) if isinstance(config.get("compat"), str) else None
    for section, key in PRESET_KEYS:
        sec = config.get(section)
        if sec is None and preset and (section, key) in preset and section != "dataset":
            sec = config[section] = {}  # a section with schema default {} (dataset is required: left to the schema)
        if not isinstance(sec, dict):
            continue
        if sec.get(key) is None and preset and (section, key) in preset:
            sec[key] = copy.deepcopy(preset[(section, key)])
        elif key in sec and sec[key] is None:
            del sec[key]


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _schema_errors(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        where = _key_path(err)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            prefix = f"{where}." if where != "<top level>" else ""
            for key in extra:
                lines.append(f"unknown key '{prefix}{key}' (allowed here: {', '.join(allowed)})")
        elif err.validator in ("oneOf", "anyOf"):
            lines.append(f"{where}: {_short(err.instance)} is not an allowed value"
                         + (f" ({err.schema['description']})" if "description" in err.schema else ""))
        else:
            lines.append(f"{where}: {err.message if len(err.message) < 300 else err.message[:300] + '...'}")
    return lines


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema, fill defaults, run the cross-field checks; return a copy.

    Raises
    ------
    ConfigError
        Naming the offending key (e.g. ``demo.n_stroies``) and what is wrong with it; for an unknown
        key, the keys allowed at that level (never the whole schema).
    """
    config = copy.deepcopy(config) if config is not None else {}
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping, got {type(config).__name__}")
    schema = load_schema()
    _apply_preset(config)  # before the defaults: only keys left unset (or null) take the preset's values
    _fill_defaults(config, schema)
    lines = _schema_errors(config, schema)
    if lines:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines))
    _cross_checks(config, source)
    return config


def _cross_checks(config: dict, source: str) -> None:
    demo = config["demo"]
    pairs = [("demo.min_words", "demo.max_words", demo["min_words"], demo["max_words"], True),
             ("demo.trw_min", "demo.trw_max", demo["trw_min"], demo["trw_max"], False),
             ("demo.snr_min", "demo.snr_max", demo["snr_min"], demo["snr_max"], False)]
    for lo_key, hi_key, lo, hi, strict in pairs:
        if lo > hi or (strict and lo == hi):
            relation = "smaller than" if strict else "at most"
            raise ConfigError(f"{source}: {lo_key} ({lo}) must be {relation} {hi_key} ({hi})")
    trw = config["trw"]
    if trw["sentence_gap"] > trw["paragraph_gap"]:
        raise ConfigError(f"{source}: trw.sentence_gap ({trw['sentence_gap']}) must not exceed trw.paragraph_gap "
                          f"({trw['paragraph_gap']}): a paragraph break is the longer pause")
    enc = config["encoding"]
    if enc["model"] == "banded" and not enc["nuisance"]:
        raise ConfigError(f"{source}: encoding.model is banded but encoding.nuisance is empty: a banded model needs "
                          "bands beside the language-model feature (list word_rate, phoneme_rate or silence), or set "
                          "encoding.model: ridge")
    _check_subjects_and_rois(config, source)
    kinds = set(config["encoding"]["features"])
    for spec in (config.get("models") or {}).values():
        kinds |= set((spec or {}).get("encoding_features") or [])
    if "pooled" in kinds and not config["features"]["pooled"]:
        raise ConfigError(f"{source}: encoding features list pooled, but features.pooled is false: the feature files "
                          "would not hold the window means; set features.pooled: true")
    from .modelspec import ModelError, check_models

    try:
        check_models(config)
    except ModelError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def demo_subject_ids(first: str, n: int) -> list[str]:
    """The demo's subject ids: ``first`` and the next ``n - 1``, counting up its trailing number with the
    same zero padding (``DEMO01`` -> ``DEMO02``, ...); an id without a number gets ``2``, ``3``, ..."""
    import re

    m = re.fullmatch(r"(.*?)(\d+)", first)
    if m is None:
        return [first] + [f"{first}{i}" for i in range(2, n + 1)]
    prefix, digits = m.groups()
    return [f"{prefix}{int(digits) + i:0{len(digits)}d}" for i in range(n)]


# folders of results/ beside the subjects' own (lmbrain.layout): no subject may take these names
RESERVED_FOLDERS = {"group": "group results", "models": "language models", "corpus": "training corpus",
                    "features": "word features", "scrambled": "scrambled stories' features",
                    "benchmarks": "benchmark files"}


def _check_subjects_and_rois(config: dict, source: str) -> None:
    demo = config["demo"]
    if any(c in str(config["dataset"]["root"]) for c in "{}"):
        # the root is in the output pattern of rule demo_dataset, where braces read as a wildcard (and
        # Snakemake has no escape for them in file patterns)
        raise ConfigError(f"{source}: dataset.root {config['dataset']['root']!r} contains braces ({{ or }}), which "
                          "Snakemake reads as wildcards in file patterns; rename the folder or link to it (ln -s)")
    if config.get("subjects") is None:
        if not demo["build"]:
            raise ConfigError(f"{source}: subjects: list the subject ids of the dataset (subjects: null means the demo's "
                              "subjects, and demo.build is false)")
    elif reserved := sorted(set(config["subjects"]) & set(RESERVED_FOLDERS)):
        name = reserved[0]
        raise ConfigError(f"{source}: subjects: '{name}' is reserved for the {RESERVED_FOLDERS[name]} (results/{name}/); "
                          "rename that subject")
    elif demo["build"]:
        made = demo_subject_ids(demo["subject"], demo["n_subjects"])
        extra = [s for s in config["subjects"] if s not in made]
        if extra:
            raise ConfigError(f"{source}: subjects: {', '.join(extra)} not made by the demo (demo.subject "
                              f"{demo['subject']}, demo.n_subjects {demo['n_subjects']} make {', '.join(made)}); "
                              "raise demo.n_subjects or set subjects: null")
    rois = config["rois"]
    rate_rois = config["decoding"].get("rate_rois")
    if rate_rois and rois["source"] == "none":
        raise ConfigError(f"{source}: decoding.rate_rois fits word-rate models on ROIs, but rois.source is none; "
                          "set rois.source (pycortex, labels or bids) or decoding.rate_rois: null")
    if rate_rois and rois["names"] is not None:
        unknown = [n for g in rate_rois for n in g if n not in rois["names"]]
        if unknown:
            raise ConfigError(f"{source}: decoding.rate_rois names ROI(s) {', '.join(unknown)} that are not in "
                              f"rois.names ({', '.join(rois['names'])})")
    if rois["source"] == "none":
        return
    if rois["source"] == "labels":
        missing = [k for k in ("label_image", "label_table") if not rois[k]]
        if missing:
            raise ConfigError(f"{source}: rois.source is labels, so rois.{' and rois.'.join(missing)} must name the "
                              "label NIfTI (on the subject's voxel grid) and its TSV of names (columns index, name)")
    order = rois["order"]
    if order:
        names = [n for g in order for n in g]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{source}: rois.order: ROI(s) {', '.join(dup)} appear more than once")
        if len(order) < 2:
            raise ConfigError(f"{source}: rois.order needs at least two groups of ROIs (shortest windows first), "
                              f"got {order}; [] = no ordering test")
        if rois["names"] is not None:
            unknown = [n for n in names if n not in rois["names"]]
            if unknown:
                raise ConfigError(f"{source}: rois.order names ROI(s) {', '.join(unknown)} that are not in rois.names "
                                  f"({', '.join(rois['names'])})")


def load_config(*paths: str | os.PathLike) -> dict:
    """Read one or more YAML files (later ones merged over earlier ones) and validate them."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: configuration file not found")
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of keys to values")
        merged = merge(merged, data)
    return validate_config(merged, source=", ".join(str(p) for p in paths))


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge as Snakemake's --configfile does it (update wins; lists replace)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------------------------------
# Typed settings
@dataclass(frozen=True)
class DatasetSettings:
    """Where the data is and which stories train and test (``dataset``, ``tr``, ``stories``)."""

    layout: str
    root: str
    tr: float
    train: str | tuple[str, ...]  # "all" or story names
    test: tuple[str, ...]
    non_words: str = "lmbrain"  # word-tier labels dropped: lmbrain or huth (datasets.NON_WORD_SETS)


@dataclass(frozen=True)
class DemoSettings:
    """The embedded demo's generator settings (``demo``)."""

    build: bool
    subject: str
    plays: tuple[str, ...]
    n_stories: int | None
    min_words: int
    max_words: int
    words_per_second: float
    pause_comma: float
    pause_sentence: float
    pause_speech: float
    pause_scene: float
    n_repeats: int
    voxel_stride: tuple[int, ...]
    trw_min: int
    trw_max: int
    snr_min: float
    snr_max: float
    noise_fraction: float
    noise_ar1: float
    word_rate_fraction: float
    n_topics: int
    topic_temperature: float
    cache_dir: str
    n_subjects: int = 1

    @property
    def subjects(self) -> tuple[str, ...]:
        """The subject ids the demo writes (:func:`demo_subject_ids`)."""
        return tuple(demo_subject_ids(self.subject, self.n_subjects))


@dataclass(frozen=True)
class TopicSettings:
    """What the demo's topic model (and the ``planted`` model that reads it) depends on."""

    seed: int
    plays: tuple[str, ...]
    n_topics: int
    topic_temperature: float
    cache_dir: str


def topic_settings(seed: int, demo: DemoSettings) -> TopicSettings:
    return TopicSettings(seed=seed, plays=demo.plays, n_topics=demo.n_topics, topic_temperature=demo.topic_temperature,
                         cache_dir=demo.cache_dir)


@dataclass(frozen=True)
class CorpusSettings:
    """The word-level models' training text (``corpus``), exclusions and cache resolved."""

    source: str
    exclude: tuple[str, ...]
    heldout_fraction: float
    cache_dir: str


@dataclass(frozen=True)
class ModelSpec:
    """One language model: its type, resolved context lengths and layers, and its type's settings.

    ``params`` holds every other key of the model's config with its type's defaults filled
    (:mod:`lmbrain.modelspec`); ``spec["hidden_dim"]`` reads a field or a param.
    """

    name: str
    type: str
    context_lengths: tuple[int, ...]
    layers: tuple[int, ...] | None
    attention_features: bool
    params: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        if key in ("name", "type", "context_lengths", "layers", "attention_features"):
            value = getattr(self, key)
            return list(value) if isinstance(value, tuple) else value
        return self.params[key]

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def as_dict(self) -> dict:
        """The flat model config (type, layers, attention_features, context_lengths and params)."""
        out = dict(self.params)
        out.update(type=self.type, layers=None if self.layers is None else list(self.layers),
                   attention_features=self.attention_features, context_lengths=list(self.context_lengths))
        return out


@dataclass(frozen=True)
class FeatureSettings:
    dtype: str
    precision: str
    max_batch_tokens: int
    pooled: bool = False  # also save window means of the hidden states (feature kind "pooled")


@dataclass(frozen=True)
class EncodingSettings:
    features: tuple[str, ...]
    layers: str
    delays: tuple[int, ...]
    alphas: tuple[float, ...]
    score: str
    search: str
    cv_folds: int | None
    memory_gb: float
    n_permutations: int
    block: int
    fdr: float
    weights_dtype: str
    maps: bool
    nuisance: tuple[str, ...]  # low-level bands fitted beside the language-model feature
    model: str  # resolved: "ridge" or "banded"
    gammas: int
    refine_gammas: int
    delays_across_stories: bool = False  # the reference: stack each set's stories, then delay
    phones_include_silence: bool = False  # phoneme_rate counts silences too (the reference)


@dataclass(frozen=True)
class TRWSettings:
    fraction: float
    n_boot: int
    block: int
    scramble: bool
    scramble_seeds: int
    sentence_gap: float
    paragraph_gap: float
    scramble_threshold: float
    truth: str | None  # planted-truth file to score against (resolved), or None


@dataclass(frozen=True)
class RoiSettings:
    """Regions of interest and their per-subject summaries (``rois``, less the group test; ``cache_dir``
    resolved)."""

    source: str  # pycortex, labels, bids or none
    names: tuple[str, ...] | None
    pycortex_subject: str | None
    pycortex_xfm: str | None
    label_image: str | None
    label_table: str | None
    bids_desc: str | None
    overlap: str
    min_voxels: int
    min_significant: int
    n_boot: int
    cache_dir: str

    @property
    def enabled(self) -> bool:
        return self.source != "none"


@dataclass(frozen=True)
class GroupSettings:
    """The group test of the ROI ordering (``rois.order``, ``rois.n_perm``)."""

    order: tuple[tuple[str, ...], ...]
    n_perm: int


@dataclass(frozen=True)
class DecodingSettings:
    """The decoder's settings (``decoding``, less the lists of models and stories to decode)."""

    feature_model: str | None
    layer: int | None
    context: int
    n_voxels: int
    shrinkage: float
    rate_voxels: int | None
    rate_rois: tuple[tuple[str, ...], ...] | None
    word_times: str
    beam_width: int
    extensions: int
    top_p: float
    min_ratio: float
    checkpoint_every: int
    null_samples: int
    shift_samples: int
    min_shift: float
    window: float
    step: float
    metrics: tuple[str, ...]
    bertscore_model: str
    bertscore_layer: int | None
    identification_lengths: tuple[int, ...]
    fdr: float
    cache_dir: str
    rate_rounding: str
    rate_delays_across_stories: bool
    content_window: int | None
    bigram_window: int | None
    bertscore_idf: bool
    beam_device: str | None
    beam_batch_mb: float


@dataclass(frozen=True)
class ResourceSettings:
    gpu: int
    threads: int | str  # or "auto" (lmbrain.resources.job_threads)


# -- one object per workflow rule: exactly what its stage reads ------------------------------
@dataclass(frozen=True)
class DataJob:
    dataset: DatasetSettings


@dataclass(frozen=True)
class DemoJob:
    seed: int
    dataset: DatasetSettings
    demo: DemoSettings

    @property
    def topics(self) -> TopicSettings:
        return topic_settings(self.seed, self.demo)


@dataclass(frozen=True)
class CorpusJob:
    corpus: CorpusSettings


@dataclass(frozen=True)
class TrainJob:
    seed: int
    device: str
    model: ModelSpec


@dataclass(frozen=True)
class PretrainedJob:
    model: ModelSpec
    cache_dir: str
    topics: TopicSettings | None  # the planted model's topic model (demo only)


@dataclass(frozen=True)
class FeatureJob:
    device: str
    dataset: DatasetSettings
    features: FeatureSettings
    model: ModelSpec


@dataclass(frozen=True)
class EncodingJob:
    seed: int
    device: str
    dataset: DatasetSettings
    encoding: EncodingSettings
    model: ModelSpec


@dataclass(frozen=True)
class TRWJob:
    seed: int
    device: str
    dataset: DatasetSettings
    trw: TRWSettings
    fdr: float  # encoding.fdr: significance at the best k
    maps: bool  # encoding.maps: draw brain maps
    model: ModelSpec
    feature: str

    def scramble_job(self) -> "ScrambleJob":
        """The settings of the ``scrambled_features`` job whose file this job's scrambling reads."""
        t = self.trw
        return ScrambleJob(seed=self.seed, device=self.device, dataset=self.dataset, seeds=t.scramble_seeds,
                           sentence_gap=t.sentence_gap, paragraph_gap=t.paragraph_gap, model=self.model,
                           feature=self.feature)


@dataclass(frozen=True)
class ScrambleJob:
    """Rule ``scrambled_features``: one story scrambled and read by one model at every context length
    (shared by every subject who heard the story; the ``trw`` jobs read it)."""

    seed: int
    device: str
    dataset: DatasetSettings
    seeds: int  # trw.scramble_seeds
    sentence_gap: float
    paragraph_gap: float
    model: ModelSpec
    feature: str  # the model's TRW feature (kind and layer)


@dataclass(frozen=True)
class RoisJob:
    """Rule ``rois``: one subject's ROIs and the per-ROI summary of one model's TRW table."""

    seed: int
    dataset: DatasetSettings
    rois: RoiSettings


@dataclass(frozen=True)
class GroupJob:
    """Rule ``group``: across-subject ROI results of one model (the subjects are the rule's inputs)."""

    seed: int
    group: GroupSettings


@dataclass(frozen=True)
class DecoderJob:
    seed: int
    device: str
    dataset: DatasetSettings
    decoding: DecodingSettings
    # the encoding settings the decoder's own encoding and word-rate models use
    delays: tuple[int, ...]
    alphas: tuple[float, ...]
    search: str
    memory_gb: float
    cv_folds: int | None
    model: ModelSpec
    feature_model: ModelSpec | None
    delays_across_stories: bool = False  # encoding.delays_across_stories (its encoding model's design)
    score: str = "r2"  # encoding.score (its alpha selection and voxel ranking)
    rois: RoiSettings | None = None  # the ROI source, when decoding.rate_rois fits word-rate models on ROIs


@dataclass(frozen=True)
class DecodeJob:
    seed: int
    device: str
    dataset: DatasetSettings
    decoding: DecodingSettings
    model: ModelSpec
    feature_model: ModelSpec | None


def to_json(obj) -> str:
    """A settings object as canonical JSON (sorted keys): a rule's ``params`` value."""
    return json.dumps(dataclasses.asdict(obj), sort_keys=True, separators=(",", ":"))


def from_json(cls, text: str):
    """Rebuild a settings object of class ``cls`` from :func:`to_json`'s text."""
    return _build(cls, json.loads(text))


def _build(tp, value):
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for opt in options:  # the first option the value fits
            if dataclasses.is_dataclass(opt) and isinstance(value, dict):
                return _build(opt, value)
            if typing.get_origin(opt) is tuple and isinstance(value, list):
                return _build(opt, value)
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_build(inner, v) for v in value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value})
    return value


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """A resolved configuration (see :func:`resolve`)."""

    seed: int
    tr: float
    device: str
    subjects: tuple[str, ...]
    dataset: DatasetSettings
    demo: DemoSettings
    corpus: CorpusSettings
    features: FeatureSettings
    encoding: EncodingSettings
    trw: TRWSettings
    rois: RoiSettings
    group: GroupSettings
    decoding: DecodingSettings
    resources: ResourceSettings
    models: dict  # name -> ModelSpec, the models the workflow runs (use_models; planted only on the demo)
    decoding_models: tuple[str, ...]  # models that decode (in use)
    decoding_stories: tuple[str, ...]  # stories decoded
    encoding_features: dict  # name -> tuple of encoding feature names (e.g. "hidden-L2")
    effective: dict  # the validated configuration, defaults filled (results/config.yaml)

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ConfigError(f"no model {name!r} in use (models in use: {', '.join(self.models) or 'none'}; "
                              "see models: and use_models:)")
        return self.models[name]

    @property
    def trained_models(self) -> list[str]:
        from .modelspec import TRAINED_TYPES

        return [m for m, s in self.models.items() if s.type in TRAINED_TYPES]

    @property
    def pretrained_models(self) -> list[str]:
        """HuggingFace models, and the demo's planted topic reader: built, not trained."""
        from .modelspec import TRAINED_TYPES

        return [m for m, s in self.models.items() if s.type not in TRAINED_TYPES]

    def trw_feature(self, model: str) -> str:
        """The encoding feature whose context sweep gives a model's TRW: its first encoding feature."""
        return self.encoding_features[model][0]

    @property
    def topics(self) -> TopicSettings:
        return topic_settings(self.seed, self.demo)

    # -- job settings ------------------------------------------------------------------------
    def data_job(self) -> DataJob:
        return DataJob(dataset=self.dataset)

    def demo_job(self) -> DemoJob:
        return DemoJob(seed=self.seed, dataset=self.dataset, demo=self.demo)

    def corpus_job(self) -> CorpusJob:
        return CorpusJob(corpus=self.corpus)

    def train_job(self, model: str) -> TrainJob:
        # how the features are read (context lengths, state context, encoding feature types) never reaches
        # the training: left out, so that changing them reruns the feature jobs only
        return TrainJob(seed=self.seed, device=self.device, model=self._spec_without_sweep(model))

    def pretrained_job(self, model: str) -> PretrainedJob:
        spec = self.model(model)
        return PretrainedJob(model=spec, cache_dir=self.corpus.cache_dir,
                             topics=self.topics if spec.type == "planted" else None)

    def feature_job(self, model: str) -> FeatureJob:
        return FeatureJob(device=self.device, dataset=self.dataset, features=self.features, model=self.model(model))

    def encoding_job(self, model: str) -> EncodingJob:
        return EncodingJob(seed=self.seed, device=self.device, dataset=self.dataset, encoding=self.encoding,
                           model=self.model(model))

    def truth_file(self, subject: str | None = None) -> str | None:
        """The planted-truth file of ``subject`` (default: the first subject): ``trw.truth`` with
        ``{subject}`` replaced, or the demo's own answer of that subject (``ground_truth.tsv`` for the
        first demo subject, ``ground_truth_<SUBJECT>.tsv`` for the others); None without either."""
        subject = self.subjects[0] if subject is None else subject
        explicit = self.effective["trw"]["truth"]
        if explicit is not None:
            return str(explicit).replace("{subject}", subject)
        if not self.demo.build:
            return None
        first = self.demo.subjects[0]
        name = "ground_truth.tsv" if subject == first else f"ground_truth_{subject}.tsv"
        return str(Path(self.dataset.root) / name)

    def trw_job(self, model: str, subject: str | None = None) -> TRWJob:
        trw = dataclasses.replace(self.trw, truth=self.truth_file(subject))
        return TRWJob(seed=self.seed, device=self.device, dataset=self.dataset, trw=trw,
                      fdr=self.encoding.fdr, maps=self.encoding.maps, model=self.model(model),
                      feature=self.trw_feature(model))

    def scramble_job(self, model: str) -> ScrambleJob:
        return self.trw_job(model).scramble_job()

    def rois_job(self) -> RoisJob:
        return RoisJob(seed=self.seed, dataset=self.dataset, rois=self.rois)

    def group_job(self) -> GroupJob:
        return GroupJob(seed=self.seed, group=self.group)

    def _feature_model(self, model: str) -> ModelSpec | None:
        fm = self.decoding.feature_model
        return self._spec_without_sweep(fm) if fm and fm != model else None

    def _spec_without_sweep(self, model: str) -> ModelSpec:
        """A model's spec without how the context sweep reads it (context lengths, ``state_context``,
        ``encoding_features``): what the training and decoding jobs see (the decoder reads its own fixed
        ``decoding.context``), so that a changed sweep never reruns them."""
        spec = self.model(model)
        params = {k: v for k, v in spec.params.items() if k not in ("state_context", "encoding_features")}
        return dataclasses.replace(spec, context_lengths=(), params=params)

    def decoder_job(self, model: str) -> DecoderJob:
        e = self.encoding
        # the beam search, the nulls and the scores never reach the decoder's fit: neutral values, so that
        # changing them reruns the decode jobs only
        fit_only = dataclasses.replace(
            self.decoding, word_times="", beam_width=0, checkpoint_every=0, null_samples=0, shift_samples=0,
            min_shift=0.0, window=0.0, step=0.0, metrics=(), bertscore_model="", bertscore_layer=None,
            identification_lengths=(), fdr=0.0, rate_rounding="", content_window=None, bigram_window=None,
            bertscore_idf=False, beam_device=None, beam_batch_mb=0.0)
        return DecoderJob(seed=self.seed, device=self.device, dataset=self.dataset, decoding=fit_only,
                          delays=e.delays, alphas=e.alphas, search=e.search, memory_gb=e.memory_gb,
                          cv_folds=e.cv_folds, model=self._spec_without_sweep(model), feature_model=self._feature_model(model),
                          delays_across_stories=e.delays_across_stories, score=e.score,
                          rois=self.rois if self.decoding.rate_rois else None)

    def decode_job(self, model: str) -> DecodeJob:
        return DecodeJob(seed=self.seed, device=self.device, dataset=self.dataset, decoding=self.decoding,
                         model=self._spec_without_sweep(model), feature_model=self._feature_model(model))


def _section(cls, values: dict, **overrides):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        else:
            kwargs[f.name] = _build(hints[f.name], values[f.name])
    return cls(**kwargs)


def _model_specs(config: dict, source: str) -> dict:
    from .modelspec import ModelError, check_context_lengths, check_models, n_layers_of, resolve_layers

    try:
        active = check_models(config, active_only=True)
    except ModelError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    default_ks = check_context_lengths(config["features"]["context_lengths"])
    out = {}
    for name, spec in active.items():
        ks = tuple(check_context_lengths(spec["context_lengths"], f"model '{name}'") if spec["context_lengths"]
                   else default_ks)
        if spec["type"] == "transformer" and max(ks) > spec["max_positions"]:
            raise ConfigError(f"{source}: model '{name}': max_positions {spec['max_positions']} is shorter than its "
                              f"longest context length {max(ks)} (features.context_lengths); raise max_positions")
        if spec["type"] == "huggingface":
            layers = None if spec["layers"] is None else tuple(int(x) for x in spec["layers"])
        else:
            layers = tuple(resolve_layers(spec["layers"], n_layers_of(spec), f"model '{name}'"))
        params = {k: v for k, v in spec.items() if k not in ("type", "context_lengths", "layers", "attention_features")}
        out[name] = ModelSpec(name=name, type=spec["type"], context_lengths=ks, layers=layers,
                              attention_features=bool(spec["attention_features"]), params=params)
    return out


def resolve(config: dict, source: str = "config") -> Settings:
    """Validate, check and resolve a configuration dict into :class:`Settings` (see the module docstring).

    Raises
    ------
    ConfigError
        Naming the key to change.
    """
    from .encoding import EncodingError, encoding_features

    cfg = validate_config(config, source)
    models = _model_specs(cfg, source)
    enc = cfg["encoding"]
    enc_features = {}
    for name, spec in models.items():
        try:
            kinds = spec.get("encoding_features") or enc["features"]  # a model's own list overrides
            names = encoding_features(spec.type, spec.layers, tuple(kinds), enc["layers"], spec.attention_features)
        except EncodingError as exc:
            raise ConfigError(f"{source}: model '{name}': {exc}") from None
        if not names:
            raise ConfigError(f"{source}: encoding.features {enc['features']} gives model '{name}' (type {spec.type}) "
                              "nothing to fit: attention features (heads, entropy, distance) need a model with attention "
                              "(attention, transformer, huggingface) and a layer above 0; add hidden to encoding.features")
        enc_features[name] = tuple(names)
    # decoding: the models named must exist; those not in use are skipped
    dec = cfg["decoding"]
    undefined = [m for m in list(dec["models"]) + [dec["feature_model"] or ""] if m and m not in cfg["models"]]
    if undefined:
        raise ConfigError(f"{source}: decoding names models {', '.join(undefined)} that are not defined under models:")
    decoding_models = tuple(m for m in dec["models"] if m in models)
    if decoding_models and dec["feature_model"] and dec["feature_model"] not in models:
        raise ConfigError(f"{source}: decoding.feature_model {dec['feature_model']} is not in use (use_models, or "
                          "demo.build for the planted model)")
    for m in decoding_models:
        if models[m].type == "planted":
            raise ConfigError(f"{source}: decoding.models: model '{m}' (type planted) predicts no words and cannot "
                              "propose; decode with a language model and set decoding.feature_model to it instead")
    demo_cfg = cfg["demo"]
    cache = demo_cfg["cache_dir"]
    corpus_cfg = cfg["corpus"]
    exclude = corpus_cfg["exclude"]
    if exclude is None:
        exclude = list(demo_cfg["plays"]) if corpus_cfg["source"] == "shakespeare" else []
    corpus = CorpusSettings(source=corpus_cfg["source"], exclude=tuple(exclude),
                            heldout_fraction=float(corpus_cfg["heldout_fraction"]),
                            cache_dir=corpus_cfg["cache_dir"] or cache)
    root = cfg["dataset"]["root"]
    subjects = cfg["subjects"]
    if subjects is None:  # the demo's subjects (validate_config: only with demo.build)
        subjects = demo_subject_ids(demo_cfg["subject"], demo_cfg["n_subjects"])
    truth = cfg["trw"]["truth"]
    if truth is not None:
        truth = str(truth).replace("{subject}", subjects[0])
    elif demo_cfg["build"]:
        truth = str(Path(root) / "ground_truth.tsv")
    rois_cfg = cfg["rois"]
    stories = cfg["stories"]
    train = stories["train"] if stories["train"] == "all" else tuple(stories["train"])
    dataset = DatasetSettings(layout=cfg["dataset"]["layout"], root=root, tr=float(cfg["tr"]), train=train,
                              test=tuple(stories["test"]), non_words=cfg["dataset"]["non_words"])
    return Settings(
        seed=int(cfg["seed"]), tr=float(cfg["tr"]), device=cfg["device"], subjects=tuple(subjects),
        dataset=dataset, demo=_section(DemoSettings, demo_cfg), corpus=corpus,
        features=_section(FeatureSettings, cfg["features"]), encoding=_section(EncodingSettings, enc, model=enc["model"] or ("banded" if enc["nuisance"] else "ridge")),
        trw=_section(TRWSettings, cfg["trw"], truth=truth),
        rois=_section(RoiSettings, rois_cfg, cache_dir=rois_cfg["cache_dir"] or cache),
        group=_section(GroupSettings, rois_cfg),
        decoding=_section(DecodingSettings, dec, cache_dir=dec["cache_dir"] or cache),
        resources=_section(ResourceSettings, cfg["resources"]), models=models, decoding_models=decoding_models,
        decoding_stories=tuple(dec["stories"] or stories["test"]), encoding_features=enc_features, effective=cfg,
    )


def check_paths(settings: Settings) -> None:
    """Checks of the file system made once at workflow start (the jobs check again what they read).

    - ``demo.build: true`` with a ``dataset.root`` that holds something lmbrain's demo builder did not
      make: stop, before anything could be replaced (say to set ``demo.build: false``);
    - ``trw.truth`` set explicitly: the file must exist and have the columns planted-truth scoring needs;
    - ``demo.build: false``: the dataset must open and every subject have its stories (:func:`check_dataset`);
    - the ROI names (:func:`check_rois`).
    """
    if settings.demo.build:
        from .demo import DemoError, check_demo_root

        try:
            check_demo_root(settings.dataset.root)
        except DemoError as exc:
            raise ConfigError(str(exc)) from None
    else:
        check_dataset(settings)
    explicit = settings.effective["trw"]["truth"]
    if explicit is not None:
        from .recovery import RecoveryError, read_truth

        for path in dict.fromkeys(settings.truth_file(s) for s in settings.subjects):
            try:
                read_truth(path)
            except RecoveryError as exc:
                raise ConfigError(f"trw.truth: {exc}") from None
    check_rois(settings)


def check_dataset(settings: Settings) -> None:
    """Real data (``demo.build: false``), checked once at workflow start: ``dataset.root`` opens as
    ``dataset.layout``, every subject has the stories ``stories.train`` and ``stories.test`` name, and
    the files behind them (the jobs' inputs: :meth:`lmbrain.datasets.Dataset.files`, ``word_files``,
    ``grid_files``) can be listed: a brain mask, one file per run. Without it the first input function
    that met a problem did so while Snakemake built the job graph, which printed the message inside its
    own traceback. Reads file listings (and the layout's index, such as ``respdict.json``), not the
    responses or transcripts: the jobs check those."""
    from . import LmbrainError
    from .stages.common import open_job_dataset, split_stories

    try:
        ds = open_job_dataset(settings.dataset)
        stories = set()
        for subject in settings.subjects:
            train, test = split_stories(ds, subject, settings.dataset)
            for story in train + test:
                ds.files(subject, story)
            ds.grid_files(subject)
            stories.update(train + test)
        for story in sorted(stories):  # every subject's word files of the story: once per story
            ds.word_files(story)
    except LmbrainError as exc:
        raise ConfigError(str(exc)) from None


def _pycortex_subjects(settings: Settings) -> set[tuple[str, str | None]]:
    """(pycortex subject, filestore or None) pairs the ROIs will be read from, as far as known at start:
    ``rois.pycortex_subject``, or the demo's S1, or each subject's ``surface.json`` when the dataset exists."""
    r = settings.rois
    if r.pycortex_subject:
        return {(r.pycortex_subject, None)}
    if settings.demo.build:
        return {("S1", None)}
    out = set()
    for subject in settings.subjects:
        path = Path(settings.dataset.root) / "derivative" / "pycortex-db" / subject / "surface.json"
        try:
            out.add((str(json.loads(path.read_text(encoding="utf-8"))["subject"]), None))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the rois job says what is wrong
    return out


def check_rois(settings: Settings) -> None:
    """ROI checks that need files, made once at workflow start: every ``rois.names`` entry drawn in the
    pycortex subject's overlays (source pycortex), or in the label table (source labels)."""
    r = settings.rois
    rate = [n for g in (settings.decoding.rate_rois or ()) for n in g if n not in (r.names or ())]
    names = list(dict.fromkeys([*(r.names or ()), *rate]))
    if not r.enabled or not names:
        return

    def named(bad):  # the setting that lists unknown names (rois.names first) and those of them it lists
        listed = [n for n in bad if n in (r.names or ())]
        return ("rois.names", listed) if listed else ("decoding.rate_rois", bad)
    if r.source == "pycortex":
        from .rois import RoiError

        for subject, filestore in sorted(_pycortex_subjects(settings), key=str):
            try:
                available = _drawn_names(subject, filestore)
            except RoiError as exc:
                raise ConfigError(f"rois.source pycortex: {exc}") from None
            bad = [n for n in names if n not in available]
            if bad:
                key, bad = named(bad)
                raise ConfigError(f"{key}: {', '.join(bad)} not drawn in pycortex subject {subject}'s overlays; "
                                  f"available: {', '.join(available)}")
    elif r.source == "labels":
        from .rois import RoiError, read_label_table

        for path in dict.fromkeys(r.label_table.replace("{subject}", s) for s in settings.subjects):
            if not Path(path).exists():
                continue  # may be made by the workflow; the rois job checks again
            try:
                table = read_label_table(path)
            except RoiError as exc:
                raise ConfigError(f"rois.label_table: {exc}") from None
            drawn = [n for n in table.loc[table["index"] != 0, "name"]]
            bad = [n for n in names if n not in drawn]
            if bad:
                key, bad = named(bad)
                raise ConfigError(f"{key}: {', '.join(bad)} not in the label table {path}; available: "
                                  f"{', '.join(drawn)}")


_DRAWN: dict = {}


def _drawn_names(subject: str, filestore) -> list[str]:
    from .rois import pycortex_roi_names

    import contextlib
    import io

    key = (subject, filestore)
    if key not in _DRAWN:
        # pycortex prints a notice about Inkscape (never needed here) when imported
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _DRAWN[key] = pycortex_roi_names(subject, filestore)
    return _DRAWN[key]


def write_config(effective: dict, path: str | os.PathLike) -> None:
    """Write the run's effective configuration (defaults filled, config files merged) as YAML, atomically."""
    from . import __version__
    from .io import write_text

    header = f"# effective configuration of this lmbrain {__version__} run (defaults filled, --configfile merged)\n"
    write_text(path, header + yaml.safe_dump(dict(effective), sort_keys=False, default_flow_style=None, width=100))
