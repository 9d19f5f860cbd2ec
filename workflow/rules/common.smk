# Configuration and input functions (no science here).
# lmbrain.config.resolve validates the config against the schema packaged with lmbrain, runs every
# cross-field check and returns typed settings; each rule passes its stage exactly the settings it reads
# as a params value (a JSON string), so a setting change reruns exactly the jobs that read it.
import functools
import json
import re

from snakemake.exceptions import WorkflowError

import lmbrain
from lmbrain.config import ConfigError, check_paths, resolve, to_json
from lmbrain.encoding import FEATURE_KINDS
from lmbrain.layout import DEFAULT as L

try:
    S = resolve(config, source="configuration")
    check_paths(S)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

MODELS = S.models
TRAINED_MODELS = S.trained_models
# HuggingFace models, and the demo's planted topic reader: built, not trained
PRETRAINED_MODELS = S.pretrained_models
DECODING_MODELS = list(S.decoding_models)
SUBJECTS = list(S.subjects)
CODE_VERSION = lmbrain.__version__


def name_pattern(names):
    """A wildcard constraint matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def dataset_ready():
    """Files that exist once the dataset is in place (the demo builds them; real data has them)."""
    if S.demo.build:
        return [f"{S.dataset.root}/demo.json"]
    return []


# -- params: one job-settings object per rule ----------------------------------------------------
# Every settings param is a function of the wildcards, even where the job has none: Snakemake formats a
# params *string* with the job's wildcards, so a setting whose value holds braces ("{subject}" in
# rois.label_image or trw.truth, say) would stop the workflow with a WildcardError; a function's value
# is passed as it is.
def demo_settings(wildcards):
    return to_json(S.demo_job())


def data_settings(wildcards):
    return to_json(S.data_job())


def run_settings(wildcards):
    """The effective configuration (defaults filled, config files merged) for results/config.yaml."""
    return json.dumps(S.effective, default=str)


def corpus_settings(wildcards):
    return to_json(S.corpus_job())


def train_settings(wildcards):
    return to_json(S.train_job(wildcards.model))


def pretrained_settings(wildcards):
    return to_json(S.pretrained_job(wildcards.model))


def feature_settings(wildcards):
    return to_json(S.feature_job(wildcards.model))


def encoding_settings(wildcards):
    return to_json(S.encoding_job(wildcards.model))


def trw_settings(wildcards):
    """The model's TRW settings, with the subject's planted-truth file (the first subject's is the
    one-subject demo's, so its settings do not change when subjects are added)."""
    return to_json(S.trw_job(wildcards.model, wildcards.subject))


def scramble_settings(wildcards):
    return to_json(S.scramble_job(wildcards.model))


def rois_settings(wildcards):
    return to_json(S.rois_job())


def group_settings(wildcards):
    return to_json(S.group_job())


def decoder_settings(wildcards):
    return to_json(S.decoder_job(wildcards.model))


def decode_settings(wildcards):
    return to_json(S.decode_job(wildcards.model))


# -- resources -----------------------------------------------------------------------------------
def _run_cores():
    """Snakemake's --cores (None when not given, e.g. a dry run)."""
    try:
        return workflow._cores
    except Exception:  # noqa: BLE001 - not set
        return None


def threads_for(mem_mb):
    """Threads of a heavy job whose memory request is ``mem_mb(wildcards, attempt)``: config
    resources.threads, an integer or auto (a local run: the fewest threads with which the jobs run side
    by side fit in the machine's memory; a cluster: 4; lmbrain.resources.job_threads)."""
    from lmbrain.resources import job_threads

    def threads(wildcards):
        return job_threads(S.resources.threads, mem_mb(wildcards, 1), _run_cores(),
                           local=not (workflow.non_local_exec or workflow.remote_exec))

    return threads


def model_gpus(wildcards):
    """GPUs each GPU-capable job asks for (config resources.gpu; limit concurrency with --resources gpu=N)."""
    return S.resources.gpu


def _mem(rule, default):
    """A memory request (MB) that grows with the subject's voxels and TRs, doubled on each retry."""
    from lmbrain.resources import job_mem_mb, subject_size

    def mem_mb(wildcards, attempt):
        return job_mem_mb(rule, S, subject_size(S, wildcards.subject), attempt, default=default,
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


# training, feature extraction and scrambling: a fixed request (a model's passes do not grow with the subject)
model_mem_mb = fixed_mem(6000)


def runtime_min(rule, minutes):
    """A time request (minutes): the rule's fixed ``minutes``, doubled on each retry; an encoding job on CPU
    asks for more when the subject's size says it needs more (lmbrain.resources.job_runtime_min)."""
    from lmbrain.resources import job_runtime_min, subject_size

    def runtime(wildcards, attempt):
        size = subject_size(S, wildcards.subject) if "subject" in wildcards.keys() else None
        return job_runtime_min(rule, S, size, attempt, default=minutes, model=wildcards.get("model"))

    return runtime


# -- stories (known once the dataset exists: after the demo checkpoint when the demo is built) ---------
def _dataset():
    from lmbrain.stages.common import open_job_dataset

    if S.demo.build:  # the checkpoint may rebuild it during the run: opened again each time
        checkpoints.demo_dataset.get()
        return open_job_dataset(S.dataset)
    return _real_dataset()


@functools.cache
def _real_dataset():
    """Real data, which no job writes: opened (its files listed) once per Snakemake process, not at every
    input function call (a dry run of a 2-subject BIDS workflow opened it 15 times)."""
    from lmbrain.stages.common import open_job_dataset

    return open_job_dataset(S.dataset)


def dataset_stories(wildcards=None):
    """Every story of the configured subjects."""
    ds = _dataset()
    return sorted({story for subject in SUBJECTS for story in ds.stories(subject)})


def subject_stories(subject):
    """A subject's training and test stories."""
    from lmbrain.stages.common import split_stories

    train, test = split_stories(_dataset(), subject, S.dataset)
    return train + test


def subject_test_stories(subject):
    from lmbrain.stages.common import split_stories

    return split_stories(_dataset(), subject, S.dataset)[1]


# -- inputs --------------------------------------------------------------------------------------
# The dataset's files are inputs, so a job reruns when data it reads change (a corrected transcript, a
# re-preprocessed run). The demo's are made by its checkpoint: its marker file stands for them all.
def subject_data(wildcards):
    """Every file behind the subject's data: responses, repeats, TR sources and word timings of its
    configured stories (the word timings of every subject's runs: some stages read a story's words
    without naming the subject), and its voxel grid."""
    if S.demo.build:
        return dataset_ready()
    ds, subject = _real_dataset(), wildcards.subject
    files = [f for story in subject_stories(subject) for f in (*ds.files(subject, story), *ds.word_files(story))]
    return sorted(set(map(str, files + ds.grid_files(subject))))


def story_data(wildcards):
    """The story's word timings (every subject's): what a feature or scrambling job reads of the data."""
    if S.demo.build:
        return dataset_ready()
    return sorted(set(map(str, _real_dataset().word_files(wildcards.story))))


def grid_data(subject):
    """The files that give the subject's voxel grid (with source bids, its ROI label image and table)."""
    if S.demo.build:
        return dataset_ready()
    files = list(map(str, _real_dataset().grid_files(subject)))
    if S.rois.source == "bids":
        from lmbrain.rois import RoiError, find_bids_dseg

        try:
            files += list(map(str, find_bids_dseg(S.dataset.root, subject, S.rois.bids_desc)))
        except RoiError:
            pass  # the rois job says what is missing
    return files


def label_files(subject):
    """rois.source labels: the subject's label image and table."""
    return [p.replace("{subject}", subject) for p in (S.rois.label_image, S.rois.label_table)]


def feature_targets(wildcards=None):
    if not MODELS:
        return []
    return [L.features_dir(m, s) for m in MODELS for s in dataset_stories()]


def encoding_inputs(wildcards):
    """The model's features for every story of the subject."""
    return [L.features_dir(wildcards.model, s) for s in subject_stories(wildcards.subject)]


def trw_inputs(wildcards):
    """The context sweep of the model's TRW feature, the test stories' features (the multi-timescale
    LSTM's unit timescales are saved with them) and, with trw.scramble, their scrambled versions."""
    test = subject_test_stories(wildcards.subject)
    inputs = {
        "encoding": L.encoding_dir(wildcards.subject, wildcards.model, S.trw_feature(wildcards.model)),
        "features": [L.features_dir(wildcards.model, s) for s in test],
    }
    if S.trw.scramble:
        inputs["scrambled"] = [L.scrambled_file(wildcards.model, s) for s in test]
    inputs["data"] = subject_data(wildcards)
    return inputs


def rois_inputs(wildcards):
    """The model's TRW table of the subject, and the dataset (the subject's voxel grid and ROI files)."""
    inputs = {"trw": L.trw_dir(wildcards.subject, wildcards.model), "data": grid_data(wildcards.subject)}
    if S.rois.source == "labels":
        inputs["labels"] = label_files(wildcards.subject)
    return inputs


def group_inputs(wildcards):
    """Every subject's ROI table of the model."""
    return [L.rois_dir(subject, wildcards.model) for subject in SUBJECTS]


def decoder_inputs(wildcards):
    """The decoding model, the feature model when another one is configured, and the dataset."""
    inputs = {"model": L.model_file(wildcards.model), "data": subject_data(wildcards)}
    feature_model = S.decoding.feature_model
    if feature_model and feature_model != wildcards.model:
        inputs["feature_model"] = L.model_file(feature_model)
    if S.decoding.rate_rois:  # word-rate models on ROIs read the ROI files
        inputs["grid"] = grid_data(wildcards.subject)
        if S.rois.source == "labels":
            inputs["labels"] = label_files(wildcards.subject)
    return inputs


# -- targets -------------------------------------------------------------------------------------
def encoding_targets():
    return [L.encoding_dir(subject, model, feature) for subject in SUBJECTS for model in MODELS
            for feature in S.encoding_features[model]]


def decoding_targets(wildcards=None):
    """Every decoded story."""
    return [L.decode_dir(subject, model, story) for subject in SUBJECTS for model in DECODING_MODELS
            for story in S.decoding_stories]


def all_targets():
    """Targets known before the dataset exists (feature_targets adds the per-story ones)."""
    targets = [L.config_file()]
    targets += [L.data_summary(subject) for subject in SUBJECTS]
    targets += [L.model_file(model, "training.png") for model in TRAINED_MODELS]
    targets += [L.model_file(model) for model in PRETRAINED_MODELS]
    targets += encoding_targets()
    targets += [L.trw_dir(subject, model) for subject in SUBJECTS for model in MODELS]
    targets += rois_targets()
    return targets


def rois_targets():
    """Per-subject ROI tables and the group results of every model (rois.source: none = neither)."""
    if not S.rois.enabled:
        return []
    targets = [L.rois_dir(subject, model) for subject in SUBJECTS for model in MODELS]
    return targets + [L.group_dir(model) for model in MODELS]
