# Helpers shared by every rule file (config validation, paths, per-model params, code hashes).
# No rules here.

import os
import re
import sys
from pathlib import Path

WORKFLOW_ROOT = Path(workflow.basedir)
sys.path.insert(0, str(WORKFLOW_ROOT))
# Scripts run in fresh interpreters: let them import this checkout's neuronkit.
# (Set, not read: the linter's envvars check is about variables a user must provide.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [str(WORKFLOW_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
)

from neuronkit.alignment_data import AlignmentDataConfig  # noqa: E402
from neuronkit.codehash import script_code_hash  # noqa: E402
from neuronkit.config import ConfigError, stage_params, validate_config  # noqa: E402
from neuronkit.data import DatasetError, DatasetSpec, check_source, local_source  # noqa: E402
from neuronkit.general import LOCAL_TASKS  # noqa: E402
from neuronkit.modelspec import REMOTE_CODE_ENV, identity  # noqa: E402
from neuronkit.preflight import check_hub_dataset, run_problems  # noqa: E402
from neuronkit.variants import p_label, poisoned_variant, site_adapter  # noqa: E402

try:
    VALID = validate_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(VALID)

# Local dataset files (the vendored benchmarks among them) and hub datasets are checked before any job: present (a hub
# id in the local cache when offline), with every column their spec maps or filters on. Jobs on a cluster node skip
# the hub check: the submitting process made it.
try:
    DATASET_SPECS = {name: DatasetSpec.from_config(name, spec) for name, spec in config["datasets"].items()}
    for _spec in DATASET_SPECS.values():
        check_source(_spec, WORKFLOW_ROOT)
        if not workflow.remote_exec:
            check_hub_dataset(_spec)
except DatasetError as err:
    raise WorkflowError(str(err)) from None

MODELS = list(config["models"])
# trust_remote_code comes from the config, never from a checkpoint's manifest: jobs read it from this variable.
os.environ[REMOTE_CODE_ENV] = ",".join(m for m in MODELS if config["models"][m]["trust_remote_code"])
DATASETS = list(config["datasets"])


# Variants that are checkpoints (generated from, scored for perplexity); patched and deactivated ones are not.
CHECKPOINT_VARIANTS = r"base|sft|aligned|sft_mlp|aligned_mlp|aligned_(?:dpo|orpo|kto|simpo)|sntune|rsntune|reference|(?:(?:attacked|nlsr|nlsr_random)_p[0-9.]+)"


# Neurons a deactivation row zeroes (neuronkit.deactivate.SELECTIONS): the PLND safety set and its two controls.
DEACTIVATION_SELECTIONS = "safety|random|magnitude"


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    variant=CHECKPOINT_VARIANTS + rf"|(?:patch_(?:safety|random)_k[0-9.]+)|(?:deact_(?:{DEACTIVATION_SELECTIONS}))",
    p=r"[0-9.]+",
    selection="safety|random",
    k=r"[0-9.]+",


def preflight(wf):
    """Before the first job (onstart): every model the run builds can be loaded here (hub access, the offline cache),
    and its GPU jobs run where CUDA is, when the local executor runs them (neuronkit.preflight)."""
    jobs = [job for job in wf.dag.needrun_jobs() if "model" in job.wildcards_dict]
    models = {job.wildcards_dict["model"] for job in jobs}
    asks_gpu = {job.wildcards_dict["model"] for job in jobs if "gpu" in job.rule.resources}
    gpus = {m: model_cfg(m)["resources"]["gpu"] for m in asks_gpu}
    problems = run_problems(config, models, gpus, wf.local_exec)
    if problems:
        raise WorkflowError("the run cannot start:\n" + "\n".join("  " + p for p in problems))


def script_code(script):
    """Hash of every neuronkit file the rule's script can import (neuronkit.codehash): editing one reruns exactly
    the rules that can run it."""
    return script_code_hash(WORKFLOW_ROOT / "workflow_scripts" / f"{script}.py", WORKFLOW_ROOT)


def model_cfg(model):
    """The validated config of one model."""
    return config["models"][model]


def threads_of(wildcards):
    """CPU threads a model's training (and other) compute jobs ask for."""
    return model_cfg(wildcards.model)["threads"]


def inference_threads_of(wildcards):
    """CPU threads a model's forward-only jobs ask for: the same bits at any count, so fewer let more run at once."""
    cfg = model_cfg(wildcards.model)
    return cfg["inference_threads"] or cfg["threads"]


def res(key):
    """A resources callable reading models.<model>.resources.<key>."""
    return lambda wildcards: model_cfg(wildcards.model)["resources"][key]


def model_job_resources(gpu=True, threads=threads_of):
    """Cluster resources of a model job, all from models.<model>.resources (the SLURM profile submits them)."""
    out = {
        "mem_mb": res("mem_mb"),
        "runtime": res("runtime"),
        "cpus_per_task": threads,
    }
    if gpu:
        out["gpu"] = res("gpu")
        if any(model_cfg(m)["resources"]["gpu_model"] for m in MODELS):
            out["gpu_model"] = lambda wildcards: model_cfg(wildcards.model)["resources"]["gpu_model"] or ""
    return out


def params_of(stage):
    """A params callable: the stage section with the model's overrides merged in."""
    return lambda wildcards: stage_params(config, wildcards.model, stage)


# The alignment variants' adapter sites: "" (every configured projection) or "_mlp" (alignment.site_modules only:
# sft_mlp, aligned_mlp, a pair that differs from base only at the MLP neurons).
ALIGNMENT_SITES = "|_mlp"


def train_params(stage_name):
    """A params callable: the stage's trainer settings; the _mlp variants train their adapter on
    alignment.site_modules only (IA3: the published scale on down_proj's input, neuronkit.variants.site_adapter)."""

    def params(wildcards):
        section = stage(wildcards.model, stage_name)
        if not wildcards.sites:
            return section
        return {
            **section,
            "adapter": site_adapter(section["adapter"], config["alignment"]["site_modules"]),
        }

    return params


def dataset_parquet(name):
    return f"results/data/{name}.parquet"


def ckpt(model, variant):
    return f"results/{model}/checkpoints/{variant}"


def given_aligned_models():
    """Models whose aligned variant is given in config rather than produced."""
    return [m for m in MODELS if model_cfg(m).get("aligned")]


def alignment_datasets():
    """Every dataset alignment reads (harmful, benign, then the borderline ones), without repeats."""
    return AlignmentDataConfig.from_config(config["alignment"]).datasets()


def alignment_answers(wildcards):
    """The base model's own answers to every alignment dataset, in ``alignment_datasets()`` order."""
    return [self_answers(wildcards.model, d) for d in alignment_datasets()]


def eval_datasets():
    """(dataset, label) pairs scored in the report."""
    ev = config["evaluation"]
    return [(d, "harmful") for d in ev["harmful"]] + [(d, "benign") for d in ev["benign"]]


def scored_paths(model):
    ev = config["evaluation"]
    return [scored(model, v, d) for v in ev["variants"] for d, _ in eval_datasets()]


def report_sections(model):
    """Section files merged into report.json; later stages append theirs here."""
    sections = {"evaluation": f"results/{model}/sections/evaluation.json"}
    for name in ("neurons", "patching", "safeguard", "sntune", "nlsr", "overlap", "general"):
        sections[name] = f"results/{model}/sections/{name}.json"
    return sections


def stage_keys(name, *keys):
    """A params callable with only some keys of a stage section, so other keys do not rerun the rule."""
    return lambda wildcards: {k: stage(wildcards.model, name)[k] for k in keys}


def stage_without(name, *keys):
    """A params callable with a stage section less some keys, so those keys do not rerun the rule."""
    return lambda wildcards: {k: v for k, v in stage(wildcards.model, name).items() if k not in keys}


def stage(model, name):
    """A stage section for one model (global values with the model's overrides)."""
    return stage_params(config, model, name)


def k_label(k):
    """A grid value as it appears in paths: counts as integers, fractions as decimals."""
    return str(int(k)) if k >= 1 else repr(float(k))


def k_labels(model):
    return [k_label(k) for k in stage(model, "patching")["k_grid"]]


def contrast_pair(model):
    """(aligned, unaligned) checkpoint dirs the contrast and the patching use."""
    c = stage(model, "contrast")
    return ckpt(model, c["aligned"]), ckpt(model, c["unaligned"])


def variant_ckpt(model, stage_name):
    """The checkpoint a stage section's ``variant`` names."""
    return ckpt(model, stage(model, stage_name)["variant"])


def scored(model, variant, dataset):
    return f"results/{model}/scored/{variant}/{dataset}.parquet"


def generations(model, variant, dataset):
    return f"results/{model}/generations/{variant}/{dataset}.parquet"


def self_answers(model, dataset):
    """The base model's own answers to one dataset's prompts."""
    return f"results/{model}/self_answers/{dataset}.parquet"


def p_labels(model):
    """The attack's poison fractions as they appear in variant names (attacked_p0.1)."""
    return [p_label(p) for p in stage(model, "nlsr")["p_grid"]]


def contrast_params(wildcards):
    """One contrast job's section: the safety neurons (contrast) on contrast.dataset, the helpfulness neurons
    (helpful) on contrast.helpful_dataset; the other job's dataset is left out, so changing it reruns nothing here."""
    section = dict(stage(wildcards.model, "contrast"))
    helpful_dataset = section.pop("helpful_dataset")
    if wildcards.contrast == "helpful":
        section["dataset"] = helpful_dataset
    return section


def neuron_index(model, method="contrast"):
    return f"results/{model}/neurons/{method}.parquet"


def patched_scored(model):
    """Scored patched generations: {dataset: {selection: {k: path}}}."""
    return {
        d: {
            s: {k: f"results/{model}/scored/patch_{s}_k{k}/{d}.parquet" for k in k_labels(model)}
            for s in ("safety", "random")
        }
        for d in stage(model, "patching")["datasets"]
    }


def flat_paths(nested):
    """Leaves of a nested dict of paths."""
    if isinstance(nested, str):
        return [nested]
    return [p for v in nested.values() for p in flat_paths(v)]


def report_json(model):
    return f"results/{model}/report.json"


def regex_of(names):
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(map(re.escape, names)) if names else "(?!x)x"


def perplexity_dataset(model):
    """The held-out benign dataset whose perplexity shows whether a changed model still works (patching.ppl_dataset)."""
    return stage(model, "patching")["ppl_dataset"] or "benign_test"


def perplexity_text(wildcards):
    return dataset_parquet(perplexity_dataset(wildcards.model))


def variant_perplexity(model, variant):
    return f"results/{model}/perplexity/{variant}.json"


def sntune_benign_answers(wildcards):
    """The base model's own benign answers, when SN-Tune mixes benign documents in (benign_docs > 0)."""
    s = stage(wildcards.model, "sntune")
    return self_answers(wildcards.model, s["benign_dataset"]) if s["benign_docs"] else []


def plnd_documents(wildcards):
    """The prepared dataset PLND detects safety neurons on (the magnitude-matched control measures its activations)."""
    return dataset_parquet(stage(wildcards.model, "plnd")["dataset"])


def safety_set(model: str) -> str:
    """The PLND safety set deactivation and SN-Tune use (plnd.selection: the intersection, or the specific ranking)."""
    selection = stage(model, "plnd")["selection"]
    return neuron_index(model, "plnd" if selection == "intersection" else "plnd_specific")


def deactivation_index(model: str, selection: str) -> str:
    """The neuron index a deactivation row zeroes: the PLND safety set itself, or one of its controls."""
    return safety_set(model) if selection == "safety" else neuron_index(model, f"deact_{selection}")


def deactivation_indices(wildcards):
    """Every deactivation selection's neuron index, keyed by selection (the perplexity job zeroes each in turn)."""
    return {s: deactivation_index(wildcards.model, s) for s in DEACTIVATION_SELECTIONS.split("|")}


def sntune_section_inputs(wildcards):
    """Everything the SN-Tune section reads."""
    m = wildcards.model
    before, detected = stage(m, "sntune")["variant"], stage(m, "plnd")["variant"]
    evaluated = [d for d, _ in eval_datasets()]
    deact = stage(m, "deactivation")["datasets"]
    return {
        "plnd": safety_set(m),
        "foundation": neuron_index(m, "plnd_foundation"),
        "summaries": [f"results/{m}/sntune/{t}.json" for t in ("sntune", "rsntune")],
        "perplexity": [variant_perplexity(m, v) for v in (before, "sntune", "rsntune")],
        "deactivation_perplexity": f"results/{m}/sntune/deactivation_perplexity.json",
        "tuning": [scored(m, v, d) for v in (before, "sntune", "rsntune") for d in evaluated],
        "deactivation": [
            scored(m, v, d)
            for v in (detected, *(f"deact_{s}" for s in DEACTIVATION_SELECTIONS.split("|")))
            for d in deact
        ],
    }


def patching_section_inputs(wildcards):
    """Scored U, A and patched generations (+ perplexity when configured)."""
    m, c = wildcards.model, stage(wildcards.model, "contrast")
    p = stage(m, "patching")
    out = {
        "patched": flat_paths(patched_scored(m)),
        "index": neuron_index(m, "contrast"),
        "unaligned": [scored(m, c["unaligned"], d) for d in p["datasets"]],
        "aligned": [scored(m, c["aligned"], d) for d in p["datasets"]],
    }
    if p["ppl_dataset"]:
        out["perplexity"] = f"results/{m}/patching/perplexity.json"
    return out


def general_variants(model):
    """Checkpoint variants whose general ability is scored; attacked, nlsr and nlsr_random at each headline p."""
    out = []
    for kind in stage(model, "general")["variants"]:
        if kind in ("attacked", "nlsr", "nlsr_random"):
            out += [f"{kind}_p{p}" for p in random_control_p_labels(model)]
        else:
            out.append(kind)
    return out


def general_task_files(wildcards):
    """The vendored data of the local lm-eval tasks a model's general ability uses (editing one reruns the jobs)."""
    return [LOCAL_TASKS[t][0] for t in stage(wildcards.model, "general")["tasks"] if t in LOCAL_TASKS]


def random_control_p_labels(model):
    """Poison fractions at which the random-mask control runs, as in variant names."""
    return [p_label(p) for p in stage(model, "nlsr")["random_control_p"]]


def nlsr_section_inputs(wildcards):
    """Scored safety and task generations of aligned, reference, attacked(p), realigned(p) and the random-mask
    controls."""
    m, n = wildcards.model, stage(wildcards.model, "nlsr")
    variants = ["aligned", "reference"] + [
        poisoned_variant(kind, p) for p in p_labels(m) for kind in ("attacked", "nlsr")
    ]
    variants += [poisoned_variant("nlsr_random", p) for p in random_control_p_labels(m)]
    return {
        "safety": [scored(m, v, d) for v in variants for d in n["datasets"]],
        "task": [generations(m, v, n["task_test"]) for v in variants],
        "task_data": dataset_parquet(n["task_test"]),
        "perplexity": [variant_perplexity(m, v) for v in variants],
        "realign": [ckpt(m, poisoned_variant("nlsr", p)) for p in p_labels(m)],
    }


def neuron_method_file(model, method):
    """Where a neuron method's artifact lives: an index for contrast and PLND, entry scores for NLSR's scores."""
    if method in ("snip", "wanda", "lowrank"):
        return f"results/{model}/neurons/{method}_scores.safetensors"
    return safety_set(model) if method == "plnd" else neuron_index(model, method)


def overlap_inputs(wildcards):
    """Method -> artifact, for the methods the overlap section compares."""
    return {m: neuron_method_file(wildcards.model, m) for m in stage(wildcards.model, "overlap")["methods"]}


def html_report_plots(wildcards):
    """Plot name -> PNG, in the HTML report's reading order."""
    plots = f"results/{wildcards.model}/plots"
    names = {
        "variant_scores": "variant_scores",
        "restore_curve": "restore_curve",
        "neurons_per_layer": "neurons_per_layer",
        "nlsr": "nlsr",
        "overlap_heatmap": "overlap",
    }
    return {key: f"{plots}/{name}.png" for key, name in names.items()}


def html_report(model):
    return f"results/{model}/report.html"
