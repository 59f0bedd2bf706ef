rule self_answers:
    """The base model's own greedy answers: benign SFT targets and rejected preference answers."""
    input:
        base=ckpt("{model}", "base"),
        prompts=dataset_parquet("{dataset}"),
    output:
        parquet="results/{model}/self_answers/{dataset}.parquet",
    log:
        "results/{model}/logs/self_answers/{dataset}.log",
    benchmark:
        "results/{model}/benchmarks/self_answers/{dataset}.tsv"
    conda:
        "../envs/model.yaml"
    threads: inference_threads_of
    resources:
        **model_job_resources(threads=inference_threads_of),
    params:
        gen=params_of("self_answers"),
        seed=config["seed"],
        code=script_code("self_answers"),
    script:
        "../workflow_scripts/self_answers.py"


rule sft:
    """SFT adapter: refusals for harmful prompts, the base model's own real answers for benign and borderline ones
    (sft_mlp: the adapter on alignment.site_modules only)."""
    input:
        base=ckpt("{model}", "base"),
        answers=alignment_answers,
    output:
        directory(ckpt("{model}", "sft{sites}")),
    log:
        "results/{model}/logs/sft{sites}.log",
    benchmark:
        "results/{model}/benchmarks/sft{sites}.tsv"
    wildcard_constraints:
        sites=ALIGNMENT_SITES,
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        train=train_params("sft"),
        data=config["alignment"],
        datasets=alignment_datasets(),
        judge=config["judge"],
        seed=config["seed"],
        code=script_code("sft"),
    script:
        "../workflow_scripts/sft.py"


rule preference:
    """Preference adapter over SFT: refusal > the base model's real answer on harmful prompts (and the mirror pairs)
    (aligned_mlp: over sft_mlp, the adapter on alignment.site_modules only)."""
    input:
        sft=ckpt("{model}", "sft{sites}"),
        answers=alignment_answers,
    output:
        directory(ckpt("{model}", "aligned{sites}")),
    log:
        "results/{model}/logs/preference{sites}.log",
    benchmark:
        "results/{model}/benchmarks/preference{sites}.tsv"
    wildcard_constraints:
        model=regex_of([m for m in MODELS if m not in given_aligned_models()]),
        sites=ALIGNMENT_SITES,
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        method=config["alignment"]["preference"],
        train=train_params("preference"),
        data=config["alignment"],
        datasets=alignment_datasets(),
        judge=config["judge"],
        seed=config["seed"],
        code=script_code("preference"),
    script:
        "../workflow_scripts/preference.py"


rule preference_method:
    """Another preference method's aligned variant (aligned_orpo, aligned_kto, aligned_simpo), on demand: list it
    under evaluation.variants to score it beside the default."""
    input:
        sft=ckpt("{model}", "sft"),
        answers=alignment_answers,
    output:
        directory(ckpt("{model}", "aligned_{method}")),
    log:
        "results/{model}/logs/preference_{method}.log",
    benchmark:
        "results/{model}/benchmarks/preference_{method}.tsv"
    wildcard_constraints:
        method="dpo|orpo|kto|simpo",
    conda:
        "../envs/model.yaml"
    threads: threads_of
    resources:
        **model_job_resources(),
    params:
        method=lambda wildcards: wildcards.method,
        train=params_of("preference"),
        data=config["alignment"],
        datasets=alignment_datasets(),
        judge=config["judge"],
        seed=config["seed"],
        code=script_code("preference"),
    script:
        "../workflow_scripts/preference.py"
