rule prepare_dataset:
    """Load a configured dataset source into the common Parquet schema."""
    input:
        source=lambda wildcards: local_source(DATASET_SPECS[wildcards.dataset], WORKFLOW_ROOT) or [],
    output:
        parquet=dataset_parquet("{dataset}"),
    log:
        "results/logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
        base_dir=str(WORKFLOW_ROOT),
        code=script_code("prepare_dataset"),
    script:
        "../workflow_scripts/prepare_dataset.py"
