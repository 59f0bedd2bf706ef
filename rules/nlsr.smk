rule expo:
    """EXPO safety reference: the aligned adapter's delta over SFT scaled by (1 + alpha)."""
    input:
        aligned=ckpt("{model}", "aligned"),
    output:
        ckpt=directory(ckpt("{model}", "reference")),
    log:
        "results/{model}/logs/expo.log",
    benchmark:
        "results/{model}/benchmarks/expo.tsv"
    localrule: True
    conda:
        "../envs/model.yaml"
    params:
        nlsr=stage_keys("nlsr", "alpha", "expo_mode"),
        code=script_code("expo"),
    script:
        "../workflow_scripts/expo.py"


rule attack_mix:
    """Task rows mixed with a fraction p of harmful prompts + the base model's compliant answers (seeded)."""
    input:
        task=lambda wildcards: dataset_parquet(stage(wildcards.model, "nlsr")["task"]),
        harmful=lambda wildcards: self_answers(wildcards.model, stage(wildcards.model, "nlsr")["harmful_answers"]),
    output:
        parquet="results/{model}/nlsr/mix_p{p}.parquet",
    log:
        "results/{model}/logs/attack_mix/p{p}.log",
    benchmark:
        "results/{model}/benchmarks/attack_mix/p{p}.tsv"
    localrule: True
    conda:
        "../envs/model.yaml"
    params:
        nlsr=stage_keys("nlsr", "n", "drop_refusals"),
        judge=config["judge"],
        seed=config["seed"],
        code=script_code("attack_mix"),
    script:
        "../workflow_scripts/attack_mix.py"


rule attack:
    """Harmful fine-tuning: continue training the aligned adapter on the poisoned mix."""
    input:
        aligned=ckpt("{model}", "aligned"),
        mix="results/{model}/nlsr/mix_p{p}.parquet",
    output:
        ckpt=directory("results/{model}/checkpoints/attacked_p{p}"),
    log:
        "results/{model}/logs/attack/p{p}.log",
    benchmark:
        "results/{model}/benchmarks/attack/p{p}.tsv"
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        train=lambda wildcards: stage(wildcards.model, "nlsr")["attack"],
        seed=config["seed"],
        code=script_code("attack"),
    script:
        "../workflow_scripts/attack.py"


rule safety_masks:
    """Safety-critical entries of the reference adapter (SNIP, Wanda or low-rank) on its own safe answers."""
    input:
        reference=ckpt("{model}", "reference"),
        calibration=lambda wildcards: scored(
            wildcards.model, "reference", stage(wildcards.model, "nlsr")["calibration"]
        ),
    output:
        masks="results/{model}/neurons/{score}_masks.safetensors",
        sidecar="results/{model}/neurons/{score}_masks.json",
        scores="results/{model}/neurons/{score}_scores.safetensors",
    log:
        "results/{model}/logs/safety_masks/{score}.log",
    benchmark:
        "results/{model}/benchmarks/safety_masks/{score}.tsv"
    wildcard_constraints:
        score="snip|wanda|lowrank",
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        nlsr=stage_keys("nlsr", "keep_fraction", "calibration_keep"),
        seed=config["seed"],
        code=script_code("safety_masks"),
    script:
        "../workflow_scripts/safety_masks.py"


rule nlsr:
    """Neuron transplant: safety-critical entries of the reference into the attacked adapter's broken modules."""
    input:
        attacked="results/{model}/checkpoints/attacked_p{p}",
        reference=ckpt("{model}", "reference"),
        masks=lambda wildcards: f"results/{wildcards.model}/neurons/{stage(wildcards.model, 'nlsr')['score']}"
        "_masks.safetensors",
    output:
        ckpt=directory("results/{model}/checkpoints/nlsr_p{p}"),
    log:
        "results/{model}/logs/nlsr/p{p}.log",
    benchmark:
        "results/{model}/benchmarks/nlsr/p{p}.tsv"
    localrule: True
    conda:
        "../envs/model.yaml"
    params:
        nlsr=stage_keys("nlsr", "mode", "rate", "epsilon", "ordering", "tau", "layers"),
        seed=config["seed"],
        code=script_code("nlsr"),
    script:
        "../workflow_scripts/nlsr.py"


rule nlsr_random:
    """Random-mask control: reference entries at random positions (NLSR's modules and counts per tensor)."""
    input:
        attacked="results/{model}/checkpoints/attacked_p{p}",
        reference=ckpt("{model}", "reference"),
        nlsr="results/{model}/checkpoints/nlsr_p{p}",
        masks=lambda wildcards: f"results/{wildcards.model}/neurons/{stage(wildcards.model, 'nlsr')['score']}"
        "_masks.safetensors",
    output:
        ckpt=directory("results/{model}/checkpoints/nlsr_random_p{p}"),
    log:
        "results/{model}/logs/nlsr_random/p{p}.log",
    benchmark:
        "results/{model}/benchmarks/nlsr_random/p{p}.tsv"
    localrule: True
    conda:
        "../envs/model.yaml"
    params:
        seed=config["seed"],
        code=script_code("nlsr_random"),
    script:
        "../workflow_scripts/nlsr_random.py"


rule nlsr_section:
    """Report section: harmful score, over-refusal and task accuracy per variant and poison fraction."""
    input:
        unpack(nlsr_section_inputs),
    output:
        json="results/{model}/sections/nlsr.json",
        plot=report(
            "results/{model}/plots/nlsr.png",
            caption="../report/nlsr.rst",
            category="NLSR",
            labels={"model": "{model}", "figure": "harmful score and task accuracy vs p"},
        ),
    log:
        "results/{model}/logs/nlsr_section.log",
    benchmark:
        "results/{model}/benchmarks/nlsr_section.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        nlsr=params_of("nlsr"),
        code=script_code("nlsr_section"),
    script:
        "../workflow_scripts/nlsr_section.py"
