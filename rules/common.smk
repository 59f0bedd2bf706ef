# Helpers shared by every rule file: config validation, paths, per-model params, code hashes.
# No rules here.

import hashlib
import os
import sys
from pathlib import Path

WORKFLOW_ROOT = Path(workflow.basedir)
sys.path.insert(0, str(WORKFLOW_ROOT))
# Scripts run in fresh interpreters: let them import this checkout's neuronkit.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(WORKFLOW_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)

from neuronkit.config import ConfigError, stage_params, validate_config  # noqa: E402
from neuronkit.models import identity  # noqa: E402

try:
    VALID = validate_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(VALID)

MODELS = list(config["models"])
DATASETS = list(config["datasets"])


wildcard_constraints:
    model="|".join(MODELS),
    dataset="|".join(DATASETS),
    variant=r"base|sft|aligned|sntune|rsntune|reference|(?:(?:attacked|nlsr)_p[0-9.]+)"
    r"|(?:patch_(?:safety|random)_k[0-9.]+)|(?:deact_(?:safety|random))",
    p=r"[0-9.]+",
    selection="safety|random",
    k=r"[0-9.]+",


def code_hash(*modules):
    """Hash of the neuronkit modules a rule uses: a code change reruns that rule."""
    digest = hashlib.sha256()
    for name in sorted(set(modules) | {"__init__"}):
        digest.update((WORKFLOW_ROOT / "neuronkit" / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def model_cfg(model):
    """The validated config of one model."""
    return config["models"][model]


def threads_of(wildcards):
    """CPU threads a model's compute jobs ask for."""
    return model_cfg(wildcards.model)["threads"]


def res(key):
    """A resources callable reading models.<model>.resources.<key>."""
    return lambda wildcards: model_cfg(wildcards.model)["resources"][key]


def params_of(stage):
    """A params callable: the stage section with the model's overrides merged in."""
    return lambda wildcards: stage_params(config, wildcards.model, stage)


def dataset_parquet(name):
    return f"results/data/{name}.parquet"


def ckpt(model, variant):
    return f"results/{model}/checkpoints/{variant}"


def given_aligned_models():
    """Models whose aligned variant is given in config rather than produced."""
    return [m for m in MODELS if model_cfg(m).get("aligned")]


def eval_datasets():
    """(dataset, label) pairs scored in the report."""
    ev = config["evaluation"]
    return [(d, "harmful") for d in ev["harmful"]] + [(d, "benign") for d in ev["benign"]]


def scored_paths(model):
    ev = config["evaluation"]
    return [
        f"results/{model}/scored/{v}/{d}.parquet" for v in ev["variants"] for d, _ in eval_datasets()
    ]


def report_sections(model):
    """Section files merged into report.json; later stages append theirs here."""
    sections = {"evaluation": f"results/{model}/sections/evaluation.json"}
    for name in ("neurons", "patching", "safeguard", "sntune", "nlsr"):
        sections[name] = f"results/{model}/sections/{name}.json"
    return sections


def stage_keys(name, *keys):
    """A params callable with only some keys of a stage section, so other keys do not rerun the rule."""
    return lambda wildcards: {k: stage(wildcards.model, name)[k] for k in keys}


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


def p_labels(model):
    """The attack's poison fractions as they appear in variant names (attacked_p0.1)."""
    return [repr(float(p)) for p in stage(model, "nlsr")["p_grid"]]


def neuron_index(model, method="contrast"):
    return f"results/{model}/neurons/{method}.parquet"


def patched_scored(model):
    """Scored patched generations: {dataset: {selection: {k: path}}}."""
    return {
        d: {s: {k: f"results/{model}/scored/patch_{s}_k{k}/{d}.parquet" for k in k_labels(model)}
            for s in ("safety", "random")}
        for d in stage(model, "patching")["datasets"]
    }


def flat_paths(nested):
    """Leaves of a nested dict of paths."""
    if isinstance(nested, str):
        return [nested]
    return [p for v in nested.values() for p in flat_paths(v)]


def report_json(model):
    return f"results/{model}/report.json"
