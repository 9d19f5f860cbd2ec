# Shared configuration handling and input functions (no science here).
import json
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import lmbrain
from lmbrain.modelspec import TRAINED_TYPES, ModelError, check_context_lengths, check_models

validate(config, "../schemas/config.schema.yaml")
try:
    MODELS = check_models(config, active_only=True)
except ModelError as exc:
    raise WorkflowError(f"invalid model configuration: {exc}") from None
TRAINED_MODELS = [m for m, spec in MODELS.items() if spec["type"] in TRAINED_TYPES]
# HuggingFace models, and the demo's planted topic reader: built, not trained
PRETRAINED_MODELS = [m for m, spec in MODELS.items() if spec["type"] not in TRAINED_TYPES]

# decoding models not in use (use_models) are skipped; a name that is not defined at all is an error
_undefined = [m for m in config["decoding"]["models"] + [config["decoding"]["feature_model"] or ""]
              if m and m not in config["models"]]
if _undefined:
    raise WorkflowError(f"decoding names models {_undefined} that are not defined under models:")
DECODING_MODELS = [m for m in config["decoding"]["models"] if m in MODELS]
if DECODING_MODELS and config["decoding"]["feature_model"] and config["decoding"]["feature_model"] not in MODELS:
    raise WorkflowError(
        f"decoding.feature_model {config['decoding']['feature_model']} is not in use (use_models, or demo.build "
        "for the planted model)"
    )
DATA_ROOT = Path(config["dataset"]["root"])
SUBJECTS = list(config["subjects"])
CODE_VERSION = lmbrain.__version__


def dataset_ready():
    """Files that exist once the dataset is in place (the demo builds them; real data has them)."""
    if config["demo"]["build"]:
        return [str(DATA_ROOT / "demo.json")]
    return []


def demo_params():
    """The parts of the config the demo depends on (a change reruns the demo rule)."""
    return json.dumps(
        {"seed": config["seed"], "tr": config["tr"], "demo": config["demo"], "test": config["stories"]["test"]},
        sort_keys=True,
    )


def config_params():
    """The whole configuration (a change rewrites results/config.yaml)."""
    return json.dumps(config, sort_keys=True, default=str)


def name_pattern(names):
    """A wildcard constraint matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def dataset_stories(wildcards=None):
    """Every story of the configured subjects (after the demo checkpoint when the demo is built)."""
    if config["demo"]["build"]:
        checkpoints.demo_dataset.get()
    from lmbrain.datasets import open_dataset

    ds = open_dataset(config["dataset"]["layout"], str(DATA_ROOT), tr=config["tr"])
    return sorted({story for subject in SUBJECTS for story in ds.stories(subject)})


def corpus_params():
    """What the training corpus depends on."""
    return json.dumps({"corpus": config["corpus"], "plays": config["demo"]["plays"]}, sort_keys=True)


def model_params(wildcards):
    """What a model's training depends on (a change reruns only that model's jobs)."""
    spec = MODELS[wildcards.model]
    deps = {"spec": spec, "seed": config["seed"]}
    return json.dumps(deps, sort_keys=True)


def feature_params(wildcards):
    """What a model's features depend on: its spec, its context lengths and the feature settings."""
    spec = MODELS[wildcards.model]
    ks = spec["context_lengths"] or config["features"]["context_lengths"]
    return json.dumps({"spec": spec, "context_lengths": sorted(ks), "features": config["features"]}, sort_keys=True)


def model_threads(wildcards):
    """Threads of the heavy jobs (config resources.threads)."""
    return config["resources"]["threads"]


def model_gpus(wildcards):
    """GPUs each GPU-capable job asks for (config resources.gpu; limit concurrency with --resources gpu=N)."""
    return config["resources"]["gpu"]


def _mem(rule, default):
    """A memory request (MB) that grows with the subject's voxels and TRs, doubled on each retry."""
    from lmbrain.resources import job_mem_mb, subject_size

    def mem_mb(wildcards, attempt):
        return job_mem_mb(rule, config, subject_size(config, wildcards.subject), attempt, default=default,
                          model=wildcards.get("model"))

    return mem_mb


summary_mem_mb = _mem("data_summary", 2000)
encoding_mem_mb = _mem("encoding_model", 8000)
trw_mem_mb = _mem("trw", 4000)
decoder_mem_mb = _mem("decoder", 8000)
decode_mem_mb = _mem("decode", 8000)


def fixed_mem(mb):
    """A memory request that does not depend on the data, doubled on each retry."""

    def mem_mb(wildcards, attempt):
        return mb * attempt

    return mem_mb


def feature_targets(wildcards=None):
    if not MODELS:
        return []
    return expand("results/features/{model}/{story}", model=list(MODELS), story=dataset_stories())


def subject_stories(subject):
    """A subject's stories (after the demo checkpoint when the demo is built)."""
    if config["demo"]["build"]:
        checkpoints.demo_dataset.get()
    from lmbrain.datasets import open_dataset

    ds = open_dataset(config["dataset"]["layout"], str(DATA_ROOT), tr=config["tr"])
    train, test = ds.split(subject, config["stories"]["train"], config["stories"]["test"])
    return train + test


def encoding_inputs(wildcards):
    """The model's features for every story of the subject."""
    return expand("results/features/{model}/{story}", model=wildcards.model, story=subject_stories(wildcards.subject))


def encoding_params(wildcards):
    spec = MODELS[wildcards.model]
    ks = spec["context_lengths"] or config["features"]["context_lengths"]
    return json.dumps({"spec": spec, "ks": sorted(ks), "encoding": config["encoding"], "stories": config["stories"],
                       "seed": config["seed"]}, sort_keys=True)


def encoding_targets():
    from lmbrain.encoding import feature_names

    return [
        f"results/{subject}/encoding/{model}/{feature}"
        for subject in SUBJECTS
        for model, spec in MODELS.items()
        for feature in feature_names(spec, config["encoding"])
    ]


def trw_feature(model):
    """The encoding feature whose context sweep gives a model's TRW: its first encoding feature."""
    from lmbrain.encoding import feature_names

    return feature_names(MODELS[model], config["encoding"])[0]


def trw_input(wildcards):
    return f"results/{wildcards.subject}/encoding/{wildcards.model}/{trw_feature(wildcards.model)}"


def trw_params(wildcards):
    return json.dumps({"trw": config["trw"], "feature": trw_feature(wildcards.model)}, sort_keys=True)


def model_output(model):
    """The file that says a model is ready (trained, or built/linked)."""
    return f"results/models/{model}/config.json"


def decoder_inputs(wildcards):
    """The decoding model, the feature model when another one is configured, and the dataset."""
    inputs = {"model": model_output(wildcards.model), "data": dataset_ready()}
    feature_model = config["decoding"]["feature_model"]
    if feature_model and feature_model != wildcards.model:
        inputs["feature_model"] = model_output(feature_model)
    return inputs


def decoding_params(wildcards):
    """What a decode depends on: the decoding settings, the model specs, the stories and the seed."""
    names = [wildcards.model, config["decoding"]["feature_model"] or wildcards.model]
    return json.dumps({"decoding": config["decoding"], "models": {n: MODELS[n] for n in names},
                       "stories": config["stories"], "delays": config["encoding"]["delays"], "seed": config["seed"]},
                      sort_keys=True)


def decoding_targets(wildcards=None):
    """Every decoded story (after the demo checkpoint: the test stories come from the dataset)."""
    if not DECODING_MODELS:
        return []
    stories = config["decoding"]["stories"] or config["stories"]["test"]
    return expand("results/{subject}/decoding/{model}/{story}", subject=SUBJECTS, model=DECODING_MODELS,
                  story=stories)


def all_targets():
    """Targets known before the dataset exists (feature_targets adds the per-story ones)."""
    targets = ["results/config.yaml"]
    targets += expand("results/{subject}/data/summary.tsv", subject=SUBJECTS)
    targets += expand("results/models/{model}/training.png", model=TRAINED_MODELS)
    targets += expand("results/models/{model}/config.json", model=PRETRAINED_MODELS)
    targets += encoding_targets()
    targets += expand("results/{subject}/trw/{model}", subject=SUBJECTS, model=list(MODELS))
    return targets
