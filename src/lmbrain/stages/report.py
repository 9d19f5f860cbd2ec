"""Stage ``run_config``: the run's effective configuration, for the record and the HTML report."""

from __future__ import annotations

import json


def run_config(effective_json: str, out) -> None:
    """Write the effective configuration (the rule's ``params``, JSON) as YAML to ``out``."""
    from ..config import write_config

    write_config(json.loads(effective_json), out)
