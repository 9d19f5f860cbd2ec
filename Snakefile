# lmbrain: language models and the brain.
# Run the demo: `make demo` (or `snakemake --cores 8` inside the environment).
# The root Snakefile must define `rule all` itself: an included file cannot set the default target.
import os

from snakemake.utils import min_version

min_version("9.0")


# Defaults from the repository's config (found from the Snakefile, so `--directory` works too);
# `--configfile my.yaml` merges over them.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/encoding.smk"
include: "workflow/rules/trw.smk"
include: "workflow/rules/rois.smk"
include: "workflow/rules/decoding.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
        feature_targets,
        decoding_targets(),
    default_target: True
