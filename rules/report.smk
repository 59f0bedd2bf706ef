rule evaluation_section:
    """Harmful score and over-refusal per variant and dataset, each with its n, judge and CI."""
    input:
        scored=lambda wildcards: scored_paths(wildcards.model),
        perplexity=lambda wildcards: [variant_perplexity(wildcards.model, v) for v in config["evaluation"]["variants"]],
    output:
        json="results/{model}/sections/evaluation.json",
    log:
        "results/{model}/logs/evaluation_section.log",
    benchmark:
        "results/{model}/benchmarks/evaluation_section.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        labels=dict((d, lab) for d, lab in eval_datasets()),
        code=script_code("evaluation_section"),
    script:
        "../workflow_scripts/evaluation_section.py"


rule report:
    """report.json: one object with a section per stage, plus the variants' manifests."""
    input:
        unpack(lambda wildcards: report_sections(wildcards.model)),
        variants=lambda wildcards: [ckpt(wildcards.model, v) for v in config["evaluation"]["variants"]],
    output:
        json=report_json("{model}"),
    log:
        "results/{model}/logs/report.log",
    benchmark:
        "results/{model}/benchmarks/report.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        sections=lambda wildcards: list(report_sections(wildcards.model)),
        code=script_code("report"),
    script:
        "../workflow_scripts/report.py"


rule overlap_section:
    """Report section: do the neuron methods pick the same neurons (Jaccard at matched sizes, Spearman)?"""
    input:
        unpack(overlap_inputs),
    output:
        json="results/{model}/sections/overlap.json",
        plot=report(
            "results/{model}/plots/overlap.png",
            caption="../report/overlap.rst",
            category="Neurons",
            labels={"model": "{model}", "figure": "cross-method overlap"},
        ),
    log:
        "results/{model}/logs/overlap_section.log",
    benchmark:
        "results/{model}/benchmarks/overlap_section.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        overlap=params_of("overlap"),
        code=script_code("overlap_section"),
    script:
        "../workflow_scripts/overlap_section.py"


rule report_plots:
    """Plots drawn from the sections: harmful score and over-refusal per variant, safety neurons per layer."""
    input:
        evaluation="results/{model}/sections/evaluation.json",
        neurons="results/{model}/sections/neurons.json",
        sntune="results/{model}/sections/sntune.json",
    output:
        variant_scores=report(
            "results/{model}/plots/variant_scores.png",
            caption="../report/variant_scores.rst",
            category="Evaluation",
            labels={"model": "{model}", "figure": "harmful score and over-refusal per variant"},
        ),
        neurons_per_layer=report(
            "results/{model}/plots/neurons_per_layer.png",
            caption="../report/neurons_per_layer.rst",
            category="Neurons",
            labels={"model": "{model}", "figure": "safety neurons per layer"},
        ),
    log:
        "results/{model}/logs/report_plots.log",
    benchmark:
        "results/{model}/benchmarks/report_plots.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        code=script_code("report_plots"),
    script:
        "../workflow_scripts/report_plots.py"


rule html_report:
    """report.html: the plots with captions and the tables of report.json, self-contained (no external files)."""
    input:
        unpack(html_report_plots),
        json=report_json("{model}"),
    output:
        html=report(
            "results/{model}/report.html",
            caption="../report/report_html.rst",
            category="Report",
            labels={"model": "{model}", "figure": "HTML report"},
        ),
    log:
        "results/{model}/logs/html_report.log",
    benchmark:
        "results/{model}/benchmarks/html_report.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        plots=lambda wildcards: list(html_report_plots(wildcards)),
        code=script_code("html_report"),
    script:
        "../workflow_scripts/html_report.py"
