rule evaluation_section:
    """Harmful score and over-refusal per variant and dataset, each with its n, judge and CI."""
    input:
        scored=lambda wildcards: scored_paths(wildcards.model),
    output:
        json="results/{model}/sections/evaluation.json",
    params:
        labels=dict((d, lab) for d, lab in eval_datasets()),
        code=code_hash("evaluate", "data"),
    log:
        "results/{model}/logs/evaluation_section.log",
    localrule: True
    script:
        "../workflow_scripts/evaluation_section.py"


rule report:
    """report.json: one object with a section per stage, plus the variants' manifests."""
    input:
        unpack(lambda wildcards: report_sections(wildcards.model)),
        variants=lambda wildcards: [ckpt(wildcards.model, v) for v in config["evaluation"]["variants"]],
    output:
        json=report_json("{model}"),
    params:
        sections=lambda wildcards: list(report_sections(wildcards.model)),
        code=code_hash("report"),
    log:
        "results/{model}/logs/report.log",
    localrule: True
    script:
        "../workflow_scripts/report.py"
