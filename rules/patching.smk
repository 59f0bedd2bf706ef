rule patch_generate:
    """U's answers with the top-k (or k random) MLP neurons patched from A at every decoding step."""
    input:
        aligned=lambda wildcards: contrast_pair(wildcards.model)[0],
        unaligned=lambda wildcards: contrast_pair(wildcards.model)[1],
        index=neuron_index("{model}", "contrast"),
        stats="results/{model}/activations/contrast.safetensors",
        prompts=dataset_parquet("{dataset}"),
    output:
        parquet="results/{model}/generations/patch_{selection}_k{k}/{dataset}.parquet",
    params:
        gen=params_of("generate"),
        patching=stage_keys("patching", "value", "mode", "random_seed"),
        seed=config["seed"],
        code=code_hash("patching", "generate", "neurons", "hooks", "stats", "models", "data", "archs"),
    threads: threads_of
    resources:
        gpu=res("gpu"),
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    log:
        "results/{model}/logs/patch_generate/{selection}_k{k}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/patch_generate/{selection}_k{k}/{dataset}.tsv"
    script:
        "../workflow_scripts/patch_generate.py"


rule patch_perplexity:
    """Perplexity of held-out benign text for U, A and U patched (safety vs random neurons)."""
    input:
        aligned=lambda wildcards: contrast_pair(wildcards.model)[0],
        unaligned=lambda wildcards: contrast_pair(wildcards.model)[1],
        index=neuron_index("{model}", "contrast"),
        text=lambda wildcards: dataset_parquet(stage(wildcards.model, "patching")["ppl_dataset"]),
    output:
        json="results/{model}/patching/perplexity.json",
    params:
        patching=stage_keys("patching", "mode", "random_seed", "ppl_dataset", "ppl_k"),
        seed=config["seed"],
        code=code_hash("patching", "evaluate", "neurons", "hooks", "models", "data"),
    threads: threads_of
    resources:
        gpu=res("gpu"),
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    log:
        "results/{model}/logs/patch_perplexity.log",
    benchmark:
        "results/{model}/benchmarks/patch_perplexity.tsv"
    script:
        "../workflow_scripts/patch_perplexity.py"


def _patching_inputs(wildcards):
    """Scored U, A and patched generations (+ perplexity when configured)."""
    m, c = wildcards.model, stage(wildcards.model, "contrast")
    p = stage(m, "patching")
    out = {
        "patched": flat_paths(patched_scored(m)),
        "unaligned": [f"results/{m}/scored/{c['unaligned']}/{d}.parquet" for d in p["datasets"]],
        "aligned": [f"results/{m}/scored/{c['aligned']}/{d}.parquet" for d in p["datasets"]],
    }
    if p["ppl_dataset"]:
        out["perplexity"] = f"results/{m}/patching/perplexity.json"
    return out


rule patching_section:
    """Report section: the restore ratio R(k) for safety vs random neurons, paired tests, perplexity, plot."""
    input:
        unpack(_patching_inputs),
    output:
        json="results/{model}/sections/patching.json",
        plot="results/{model}/plots/restore_curve.png",
    params:
        nested=lambda wildcards: patched_scored(wildcards.model),
        contrast=params_of("contrast"),
        patching=params_of("patching"),
        code=code_hash("evaluate", "report", "data"),
    log:
        "results/{model}/logs/patching_section.log",
    localrule: True
    script:
        "../workflow_scripts/patching_section.py"
