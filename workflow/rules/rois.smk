# Regions of interest: each subject's TRW per ROI (its own anatomical space), and group results over
# subjects from the per-subject ROI medians (never voxels).


rule rois:
    input:
        unpack(rois_inputs),
    output:
        report(
            directory(L.rois_dir("{subject}", "{model}")),
            patterns=["{name}.png"],
            caption="../report/rois.rst",
            category="Regions and group",
            subcategory="{model}",
            labels={"subject": "{subject}", "model": "{model}", "figure": "{name}"},
        ),
    wildcard_constraints:
        subject=name_pattern(SUBJECTS),
        model=name_pattern(MODELS),
    params:
        settings=rois_settings,
        code=CODE_VERSION,
    log:
        L.log("{subject}", "rois", "{model}"),
    benchmark:
        L.benchmark("{subject}", "rois", "{model}")
    threads: 1
    resources:
        mem_mb=fixed_mem(3000),
        runtime=runtime_min("rois", 30),
    conda:
        "../../environment.yml"
    script:
        "../scripts/rois.py"


rule group:
    input:
        group_inputs,
    output:
        report(
            directory(L.group_dir("{model}")),
            patterns=["{name}.png"],
            caption="../report/group.rst",
            category="Regions and group",
            subcategory="{model}",
            labels={"subject": "group", "model": "{model}", "figure": "{name}"},
        ),
    wildcard_constraints:
        model=name_pattern(MODELS),
    params:
        settings=group_settings,
        subjects=SUBJECTS,
        code=CODE_VERSION,
    log:
        L.log("group", "{model}"),
    benchmark:
        L.benchmark("group", "{model}")
    threads: 1
    resources:
        mem_mb=fixed_mem(2000),
        runtime=runtime_min("group", 10),
    conda:
        "../../environment.yml"
    script:
        "../scripts/group.py"
