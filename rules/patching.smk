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
    log:
        "results/{model}/logs/patch_generate/{selection}_k{k}/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/patch_generate/{selection}_k{k}/{dataset}.tsv"
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        gen=params_of("generate"),
        patching=stage_keys("patching", "value", "mode", "random_seed"),
        seed=config["seed"],
        code=script_code("patch_generate"),
    script:
        "../workflow_scripts/patch_generate.py"


rule patch_perplexity:
    """Perplexity of held-out benign text for U, A and U patched (safety vs random neurons) at every k."""
    input:
        aligned=lambda wildcards: contrast_pair(wildcards.model)[0],
        unaligned=lambda wildcards: contrast_pair(wildcards.model)[1],
        index=neuron_index("{model}", "contrast"),
        text=lambda wildcards: dataset_parquet(stage(wildcards.model, "patching")["ppl_dataset"]),
    output:
        json="results/{model}/patching/perplexity.json",
    log:
        "results/{model}/logs/patch_perplexity.log",
    benchmark:
        "results/{model}/benchmarks/patch_perplexity.tsv"
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        patching=stage_keys("patching", "mode", "random_seed", "ppl_dataset", "k_grid"),
        k_labels=lambda wildcards: k_labels(wildcards.model),
        seed=config["seed"],
        code=script_code("patch_perplexity"),
    script:
        "../workflow_scripts/patch_perplexity.py"


rule patching_section:
    """Report section: the restore ratio R(k) for safety vs random neurons, paired tests, perplexity, plot."""
    input:
        unpack(patching_section_inputs),
    output:
        json="results/{model}/sections/patching.json",
        plot=report(
            "results/{model}/plots/restore_curve.png",
            caption="../report/restore_curve.rst",
            category="Finding Safety Neurons",
            labels={"model": "{model}", "figure": "restore ratio R(k)"},
        ),
    log:
        "results/{model}/logs/patching_section.log",
    benchmark:
        "results/{model}/benchmarks/patching_section.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        nested=lambda wildcards: patched_scored(wildcards.model),
        k_labels=lambda wildcards: k_labels(wildcards.model),
        contrast=stage_without("contrast", "helpful_dataset"),
        patching=params_of("patching"),
        code=script_code("patching_section"),
    script:
        "../workflow_scripts/patching_section.py"
