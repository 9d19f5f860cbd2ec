"""What every stage shares: the job's dataset and its story split."""

from __future__ import annotations

from ..config import DatasetSettings


def open_job_dataset(dataset: DatasetSettings):
    """The dataset of a job's :class:`~lmbrain.config.DatasetSettings` (its ``non_words`` label set too)."""
    from ..datasets import non_word_labels, open_dataset

    return open_dataset(dataset.layout, dataset.root, tr=dataset.tr, non_words=non_word_labels(dataset.non_words))


def split_stories(ds, subject: str, dataset: DatasetSettings) -> tuple[list[str], list[str]]:
    """A subject's (training, test) stories under the job's ``stories`` settings."""
    train = dataset.train if dataset.train == "all" else list(dataset.train)
    return ds.split(subject, train, list(dataset.test))
