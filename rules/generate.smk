rule generate:
    """Batched greedy answers of one variant on one dataset."""
    input:
        ckpt=lambda wildcards: ckpt(wildcards.model, wildcards.variant),
        prompts=dataset_parquet("{dataset}"),
    output:
        parquet="results/{model}/generations/{variant}/{dataset}.parquet",
    wildcard_constraints:
        variant=r"base|sft|aligned|sntune|rsntune|reference|(?:(?:attacked|nlsr)_p[0-9.]+)",
    params:
        gen=params_of("generate"),
        seed=config["seed"],
        code=code_hash("generate", "models", "data", "manifest", "archs"),
    threads: threads_of
    resources:
        gpu=res("gpu"),
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    log:
        "results/{model}/logs/generate/{variant}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/generate/{variant}/{dataset}.tsv"
    script:
        "../workflow_scripts/generate.py"


rule judge:
    """Judge columns (refused, harmful, judge_score, judge) added to a generations file."""
    input:
        parquet="results/{model}/generations/{variant}/{dataset}.parquet",
    output:
        parquet="results/{model}/scored/{variant}/{dataset}.parquet",
    params:
        judge=config["judge"],
        code=code_hash("judge", "data"),
    threads: 1
    resources:
        mem_mb=4000,
    log:
        "results/{model}/logs/judge/{variant}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/judge/{variant}/{dataset}.tsv"
    script:
        "../workflow_scripts/judge.py"
