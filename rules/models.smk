def _regex(names):
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(names) if names else "(?!x)x"


rule materialize:
    """Base checkpoint: builtins become safetensors once; hub ids and paths get a manifest only."""
    output:
        directory(ckpt("{model}", "base")),
    params:
        model=lambda wildcards: identity(model_cfg(wildcards.model)),
        code=code_hash("models", "manifest", "archs"),
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    log:
        "results/{model}/logs/materialize.log",
    benchmark:
        "results/{model}/benchmarks/materialize.tsv"
    script:
        "../workflow_scripts/materialize.py"


rule given_aligned:
    """An aligned variant named in config (hub id or path) instead of a produced one."""
    output:
        directory(ckpt("{model}", "aligned")),
    wildcard_constraints:
        model=_regex(given_aligned_models()),
    params:
        model=lambda wildcards: {
            **identity(model_cfg(wildcards.model)),
            "aligned": model_cfg(wildcards.model)["aligned"],
        },
        code=code_hash("models", "manifest", "archs"),
    log:
        "results/{model}/logs/given_aligned.log",
    localrule: True
    script:
        "../workflow_scripts/given_aligned.py"
