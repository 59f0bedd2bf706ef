rule general:
    """General ability of one checkpoint variant: lm-evaluation-harness accuracy on general.tasks."""
    input:
        ckpt=lambda wildcards: ckpt(wildcards.model, wildcards.variant),
        local_tasks=general_task_files,
    output:
        json="results/{model}/general/{variant}.json",
    log:
        "results/{model}/logs/general/{variant}.log",
    benchmark:
        "results/{model}/benchmarks/general/{variant}.tsv"
    wildcard_constraints:
        variant=CHECKPOINT_VARIANTS,
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        general=stage_keys("general", "tasks", "num_fewshot", "limit", "batch_size"),
        seed=config["seed"],
        code=script_code("general"),
    script:
        "../workflow_scripts/general.py"


rule general_section:
    """Report section: general ability per variant, paired tests against the first listed variant."""
    input:
        results=lambda wildcards: [
            f"results/{wildcards.model}/general/{v}.json" for v in general_variants(wildcards.model)
        ],
    output:
        json="results/{model}/sections/general.json",
    log:
        "results/{model}/logs/general_section.log",
    benchmark:
        "results/{model}/benchmarks/general_section.tsv"
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        code=script_code("general_section"),
    script:
        "../workflow_scripts/general_section.py"
