rule materialize:
    """Base checkpoint: builtins become safetensors once; hub ids and paths get a manifest only."""
    output:
        directory(ckpt("{model}", "base")),
    log:
        "results/{model}/logs/materialize.log",
    benchmark:
        "results/{model}/benchmarks/materialize.tsv"
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(gpu=False),
    params:
        model=lambda wildcards: identity(model_cfg(wildcards.model)),
        code=script_code("materialize"),
    script:
        "../workflow_scripts/materialize.py"


rule given_aligned:
    """An aligned variant named in config (hub id or path) instead of a produced one."""
    output:
        directory(ckpt("{model}", "aligned")),
    log:
        "results/{model}/logs/given_aligned.log",
    wildcard_constraints:
        model=regex_of(given_aligned_models()),
    localrule: True
    conda:
        "../envs/model.yaml"
    params:
        model=lambda wildcards: {
            **identity(model_cfg(wildcards.model)),
            "aligned": model_cfg(wildcards.model)["aligned"],
        },
        code=script_code("given_aligned"),
    script:
        "../workflow_scripts/given_aligned.py"
