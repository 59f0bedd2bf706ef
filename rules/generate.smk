rule generate:
    """Batched greedy answers of one variant on one dataset."""
    input:
        ckpt=lambda wildcards: ckpt(wildcards.model, wildcards.variant),
        prompts=dataset_parquet("{dataset}"),
    output:
        parquet="results/{model}/generations/{variant}/{dataset}.parquet",
    log:
        "results/{model}/logs/generate/{variant}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/generate/{variant}/{dataset}.tsv"
    wildcard_constraints:
        variant=CHECKPOINT_VARIANTS,
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        gen=params_of("generate"),
        seed=config["seed"],
        code=script_code("generate"),
    script:
        "../workflow_scripts/generate.py"


rule judge:
    """Judge columns (verdict, refused, degenerate, harmful, judge_score, answer_perplexity, judge) for a generations file."""
    input:
        parquet="results/{model}/generations/{variant}/{dataset}.parquet",
        base=lambda wildcards: ckpt(wildcards.model, "base"),
    output:
        parquet="results/{model}/scored/{variant}/{dataset}.parquet",
    log:
        "results/{model}/logs/judge/{variant}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/judge/{variant}/{dataset}.tsv"
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        judge=config["judge"],
        seed=config["seed"],
        code=script_code("judge"),
    script:
        "../workflow_scripts/judge.py"


rule variant_perplexity:
    """Perplexity of held-out benign text (patching.ppl_dataset) under one checkpoint: does the changed model work?"""
    input:
        ckpt=lambda wildcards: ckpt(wildcards.model, wildcards.variant),
        text=perplexity_text,
    output:
        json="results/{model}/perplexity/{variant}.json",
    log:
        "results/{model}/logs/perplexity/{variant}.log",
    benchmark:
        "results/{model}/benchmarks/perplexity/{variant}.tsv"
    wildcard_constraints:
        variant=CHECKPOINT_VARIANTS,
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        dataset=lambda wildcards: perplexity_dataset(wildcards.model),
        seed=config["seed"],
        code=script_code("variant_perplexity"),
    script:
        "../workflow_scripts/variant_perplexity.py"
