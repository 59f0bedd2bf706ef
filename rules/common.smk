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
    variant="base|sft|aligned",


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
    return {"evaluation": f"results/{model}/sections/evaluation.json"}


def report_json(model):
    return f"results/{model}/report.json"
