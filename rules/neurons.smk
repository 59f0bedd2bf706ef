rule contrast:
    """Activation contrasting of A vs U on the generator's completions: ranked MLP neurons + statistics. The
    safety neurons (contrast) on contrast.dataset; the helpfulness neurons (helpful) on contrast.helpful_dataset."""
    input:
        aligned=lambda wildcards: contrast_pair(wildcards.model)[0],
        unaligned=lambda wildcards: contrast_pair(wildcards.model)[1],
        prompts=lambda wildcards: dataset_parquet(contrast_params(wildcards)["dataset"]),
    output:
        index=neuron_index("{model}", "{contrast}"),
        sidecar="results/{model}/neurons/{contrast}.json",
        stats="results/{model}/activations/{contrast}.safetensors",
    log:
        "results/{model}/logs/{contrast}.log",
    benchmark:
        "results/{model}/benchmarks/{contrast}.tsv"
    wildcard_constraints:
        contrast="contrast|helpful",
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        contrast=contrast_params,
        seed=config["seed"],
        code=script_code("contrast"),
    script:
        "../workflow_scripts/contrast.py"


rule neurons_section:
    """Report section: the contrast index's provenance, per-layer counts and neuron2word."""
    input:
        index=neuron_index("{model}", "contrast"),
        ckpt=lambda wildcards: contrast_pair(wildcards.model)[0],
    output:
        json="results/{model}/sections/neurons.json",
    log:
        "results/{model}/logs/neurons_section.log",
    benchmark:
        "results/{model}/benchmarks/neurons_section.tsv"
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
    params:
        patching=params_of("patching"),
        code=script_code("neurons_section"),
    script:
        "../workflow_scripts/neurons_section.py"


rule safeguard:
    """Probe: U's unsafe answers predicted from top-k neuron activations at the last prompt token."""
    input:
        ckpt=lambda wildcards: contrast_pair(wildcards.model)[1],
        index=neuron_index("{model}", "contrast"),
        train=lambda wildcards: [
            scored(wildcards.model, stage(wildcards.model, "contrast")["unaligned"], d)
            for d in stage(wildcards.model, "safeguard")["train"]
        ],
        test=lambda wildcards: [
            scored(wildcards.model, stage(wildcards.model, "contrast")["unaligned"], d)
            for d in stage(wildcards.model, "safeguard")["test"]
        ],
    output:
        json="results/{model}/sections/safeguard.json",
    log:
        "results/{model}/logs/safeguard.log",
    benchmark:
        "results/{model}/benchmarks/safeguard.tsv"
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        safeguard=params_of("safeguard"),
        seed=config["seed"],
        code=script_code("safeguard"),
    script:
        "../workflow_scripts/safeguard.py"
