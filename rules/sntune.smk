rule plnd:
    """PLND: neurons that matter on every document (safety on harmful prompts, foundation on benign text)."""
    input:
        ckpt=lambda wildcards: variant_ckpt(wildcards.model, "plnd"),
        prompts=lambda wildcards: dataset_parquet(
            stage(wildcards.model, "plnd")["dataset" if wildcards.kind == "plnd" else "foundation_dataset"]
        ),
    output:
        index="results/{model}/neurons/{kind}.parquet",
        sidecar="results/{model}/neurons/{kind}.json",
    log:
        "results/{model}/logs/{kind}.log",
    benchmark:
        "results/{model}/benchmarks/{kind}.tsv"
    wildcard_constraints:
        kind="plnd|plnd_foundation",
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        plnd=stage_without("plnd", "selection"),
        seed=config["seed"],
        code=script_code("plnd"),
    script:
        "../workflow_scripts/plnd.py"


rule plnd_specific:
    """Our extension (plnd.selection: specific): the neurons most specific to harmful documents against benign ones,
    as many per module as the intersection holds."""
    input:
        ckpt=lambda wildcards: variant_ckpt(wildcards.model, "plnd"),
        harmful=lambda wildcards: dataset_parquet(stage(wildcards.model, "plnd")["dataset"]),
        benign=lambda wildcards: dataset_parquet(stage(wildcards.model, "plnd")["foundation_dataset"]),
        intersection="results/{model}/neurons/plnd.parquet",
    output:
        index="results/{model}/neurons/plnd_specific.parquet",
        sidecar="results/{model}/neurons/plnd_specific.json",
    log:
        "results/{model}/logs/plnd_specific.log",
    benchmark:
        "results/{model}/benchmarks/plnd_specific.tsv"
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        plnd=stage_without("plnd", "selection"),
        seed=config["seed"],
        code=script_code("plnd_specific"),
    script:
        "../workflow_scripts/plnd_specific.py"


rule deactivation_control:
    """The neurons a deactivation control zeroes (equal-count random, or magnitude-matched), drawn once per model."""
    input:
        ckpt=lambda wildcards: variant_ckpt(wildcards.model, "plnd"),
        index=lambda wildcards: safety_set(wildcards.model),
        plnd_docs=plnd_documents,
    output:
        index="results/{model}/neurons/deact_{control}.parquet",
        sidecar="results/{model}/neurons/deact_{control}.json",
    log:
        "results/{model}/logs/deactivation_control/{control}.log",
    benchmark:
        "results/{model}/benchmarks/deactivation_control/{control}.tsv"
    wildcard_constraints:
        control="random|magnitude",
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        deactivation=stage_keys("deactivation", "random_seed", "magnitude_window"),
        plnd=stage_keys("plnd", "n_docs", "chat", "max_length"),
        seed=config["seed"],
        code=script_code("deactivation_control"),
    script:
        "../workflow_scripts/deactivation_control.py"


rule deactivate_generate:
    """Answers of the detected model with its PLND safety neurons (or a control's neurons) zeroed."""
    input:
        ckpt=lambda wildcards: variant_ckpt(wildcards.model, "plnd"),
        index=lambda wildcards: deactivation_index(wildcards.model, wildcards.selection),
        prompts=dataset_parquet("{dataset}"),
    output:
        parquet="results/{model}/generations/deact_{selection}/{dataset}.parquet",
    log:
        "results/{model}/logs/deactivate_generate/{selection}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/deactivate_generate/{selection}/{dataset}.tsv"
    wildcard_constraints:
        selection=DEACTIVATION_SELECTIONS,
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        gen=params_of("generate"),
        seed=config["seed"],
        code=script_code("deactivate_generate"),
    script:
        "../workflow_scripts/deactivate_generate.py"


rule deactivation_perplexity:
    """Perplexity of benign text with the safety neurons (and each control's) zeroed: did safety break, or the model?"""
    input:
        unpack(deactivation_indices),
        ckpt=lambda wildcards: variant_ckpt(wildcards.model, "plnd"),
        text=perplexity_text,
    output:
        json="results/{model}/sntune/deactivation_perplexity.json",
    log:
        "results/{model}/logs/deactivation_perplexity.log",
    benchmark:
        "results/{model}/benchmarks/deactivation_perplexity.tsv"
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        seed=config["seed"],
        code=script_code("deactivation_perplexity"),
    script:
        "../workflow_scripts/deactivation_perplexity.py"


rule sntune:
    """Tune only the safety-neuron rows/columns of the unaligned model (RSN-Tune: minus foundation neurons)."""
    input:
        parent=lambda wildcards: variant_ckpt(wildcards.model, "sntune"),
        index=lambda wildcards: safety_set(wildcards.model),
        foundation=lambda wildcards: (
            "results/{model}/neurons/plnd_foundation.parquet" if wildcards.tuned == "rsntune" else []
        ),
        prompts=lambda wildcards: dataset_parquet(stage(wildcards.model, "sntune")["dataset"]),
        benign_answers=sntune_benign_answers,
    output:
        ckpt=directory("results/{model}/checkpoints/{tuned}"),
        summary="results/{model}/sntune/{tuned}.json",
    log:
        "results/{model}/logs/{tuned}.log",
    benchmark:
        "results/{model}/benchmarks/{tuned}.tsv"
    wildcard_constraints:
        tuned="sntune|rsntune",
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        sntune=params_of("sntune"),
        seed=config["seed"],
        code=script_code("sntune"),
    script:
        "../workflow_scripts/sntune.py"


rule sntune_section:
    """Report section: PLND neuron counts, deactivation table, SN-Tune and RSN-Tune before/after."""
    input:
        unpack(sntune_section_inputs),
    output:
        json="results/{model}/sections/sntune.json",
    log:
        "results/{model}/logs/sntune_section.log",
    benchmark:
        "results/{model}/benchmarks/sntune_section.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        code=script_code("sntune_section"),
    script:
        "../workflow_scripts/sntune_section.py"
