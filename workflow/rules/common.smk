# Shared configuration handling and input functions (no science here).
import json
from pathlib import Path

from snakemake.utils import validate

import lmbrain

validate(config, "../schemas/config.schema.yaml")

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


def all_targets():
    targets = expand("results/{subject}/data/summary.tsv", subject=SUBJECTS)
    return targets
