"""What a run needs from the machine before its first job: hub models and datasets it can read, and CUDA for GPU jobs.

A GPU user meets these after the queue wait, one failed job at a time, unless the workflow asks first: a gated model
and no token, a hub id that is not in the cache while offline, a hub dataset without the column its spec maps, a
``gpu: 1`` model run by the local executor on a machine without CUDA. Each check returns a message that names the
model or dataset and says what to do (None when there is nothing to do). Only the workflow imports this module
(``rules/common.smk`` and the ``onstart`` hook of the Snakefile); no job script does, so editing it reruns nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

from .data import ELEMENT_COLUMN, DatasetSpec, column_plan, dataset_error
from .modelspec import ModelSpec

HUB_FILES = ("config.json", "tokenizer_config.json")
WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")  # [namespace/]name, as the hub spells ids
DOWNLOAD_DATASET = "python -c \"import datasets; datasets.load_dataset('{id}'{subset})\""


# ----------------------------------------------------------------------------- hub models


def hub_offline() -> bool:
    """The hub client's own offline switch (HF_HUB_OFFLINE, as huggingface_hub read it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """Where huggingface_hub keeps downloads (HF_HUB_CACHE, by default $HF_HOME/hub)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def is_hub_id(source: str) -> bool:
    """A model source that names a hub repository (not a builtin, not a local folder, not a path)."""
    return not source.startswith("builtin:") and not Path(source).is_dir() and bool(_REPO_ID.match(source))


def _cached(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The cached file of a hub repo, or None (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def missing_from_cache(repo_id: str, revision: str | None = None) -> list[str]:
    """The files a load needs (config, tokenizer config, every safetensors shard) that the local cache lacks."""
    import json

    missing = [f for f in HUB_FILES if _cached(repo_id, f, revision) is None]
    index = _cached(repo_id, WEIGHTS_INDEX, revision)
    if index is not None:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return missing + [s for s in shards if _cached(repo_id, s, revision) is None]
    if _cached(repo_id, WEIGHTS, revision) is None:
        missing.append(f"{WEIGHTS} (or {WEIGHTS_INDEX} and its shards)")
    return missing


def _where(name: str, key: str, repo_id: str) -> str:
    return f"models.{name}.{key}: {repo_id!r}"


def offline_problem(name: str, key: str, repo_id: str, missing: list[str]) -> str:
    """The message for a hub id the offline cache cannot serve."""
    return (f"{_where(name, key, repo_id)} is not in the local Hugging Face cache ({hub_cache_dir()}; missing "
            f"{', '.join(missing)}) and the hub is offline (HF_HUB_OFFLINE=1): run `hf download {repo_id}` "
            "(`huggingface-cli download` in older huggingface_hub) on a machine with internet that shares this "
            "cache (HF_HOME), or unset HF_HUB_OFFLINE")


def online_problem(name: str, key: str, repo_id: str, revision: str | None) -> str | None:
    """Ask the hub for config.json (it lands in the cache): gated, missing and unreachable repos become messages."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = _where(name, key, repo_id)
    try:
        hf_hub_download(repo_id, "config.json", revision=revision)
    except GatedRepoError as err:
        if err.response is not None and err.response.status_code == 403:
            return (f"{where} is a gated model and your token has no access to it yet: request access on "
                    f"https://huggingface.co/{repo_id} and wait for the approval")
        return (f"{where} is a gated model and no Hugging Face token was found: accept its licence on "
                f"https://huggingface.co/{repo_id}, then set HF_TOKEN or run `hf auth login` "
                "(`huggingface-cli login` in older huggingface_hub)")
    except RevisionNotFoundError:
        return f"{where} has no revision {revision!r} on the hub: fix models.{name}.revision"
    except RepositoryNotFoundError:
        return (f"{where} is not on the Hugging Face hub, or is private and the token cannot see it: check the id, "
                "or set HF_TOKEN / run `hf auth login`")
    except LocalEntryNotFoundError:
        return (f"{where} cannot be reached on the hub and is not in the local cache ({hub_cache_dir()}): check the "
                f"connection, or run `hf download {repo_id}` where the hub is reachable and set HF_HUB_OFFLINE=1")
    return None


def hub_model_problem(name: str, key: str, repo_id: str, revision: str | None = None) -> str | None:
    """Whether the jobs will be able to load this hub id: from the cache when offline, from the hub when not."""
    if not is_hub_id(repo_id):
        return None
    missing = missing_from_cache(repo_id, revision)
    if not missing:
        return None
    if hub_offline():
        return offline_problem(name, key, repo_id, missing)
    return online_problem(name, key, repo_id, revision)


def model_problems(name: str, cfg: Mapping) -> list[str]:
    """Every hub id a model entry loads (its source, and a given aligned variant)."""
    spec = ModelSpec.from_config(name, cfg)
    found = [hub_model_problem(name, "source", spec.source, spec.revision)]
    if cfg.get("aligned"):
        found.append(hub_model_problem(name, "aligned", cfg["aligned"]))
    return [p for p in found if p]


# ----------------------------------------------------------------------------- GPUs


def cuda_available() -> bool:
    """What the jobs will see: torch's CUDA probe, or the NVIDIA driver when torch is not importable here."""
    try:
        import torch
    except ImportError:
        gpus = Path("/proc/driver/nvidia/gpus")
        return gpus.is_dir() and any(gpus.iterdir())
    return bool(torch.cuda.is_available())


def gpu_problem(name: str, gpus: int, local: bool) -> str | None:
    """A model that asks for GPUs, run by the local executor on a machine without CUDA."""
    if gpus < 1 or not local or cuda_available():
        return None
    return (f"models.{name}.resources.gpu is {gpus}, but this machine has no CUDA device (torch.cuda.is_available() "
            "is False) and the local executor would run the jobs here, on the CPU: run on a GPU machine, submit the "
            f"jobs with --profile profiles/slurm, or set models.{name}.resources.gpu: 0 to run on the CPU on purpose")


def run_problems(config: Mapping, models: Iterable[str], gpu_models: Mapping[str, int], local: bool) -> list[str]:
    """Every problem of the models a run builds, before its first job."""
    found = [p for m in sorted(models) for p in model_problems(m, config["models"][m])]
    return found + [p for m, g in sorted(gpu_models.items()) if (p := gpu_problem(m, g, local))]


# ----------------------------------------------------------------------------- hub datasets


def datasets_offline() -> bool:
    """The datasets library's offline switch (HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE)."""
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _download_hint(hub_id: str, subset: str | None) -> str:
    return DOWNLOAD_DATASET.format(id=hub_id, subset=f", {subset!r}" if subset else "")


def hub_columns(spec: DatasetSpec) -> list[str] | None:
    """A hub dataset's column names from its builder's info (offline: the processed cache); None when unknown."""
    import datasets

    hub_id = spec.source[len("hf:"):]
    try:
        builder = datasets.load_dataset_builder(hub_id, spec.subset)
    except Exception as exc:  # noqa: BLE001 - every cache or hub failure becomes one message with the fix
        raise dataset_error(spec.name, spec.source, _unreadable(hub_id, spec.subset, exc)) from exc
    features = builder.info.features
    return list(features) if features else None


def _unreadable(hub_id: str, subset: str | None, exc: Exception) -> str:
    """What to do about a hub dataset that cannot be read before the run."""
    if datasets_offline():
        return (f"Hugging Face dataset {hub_id!r} is not in the local datasets cache and the hub is offline "
                f"(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): run `{_download_hint(hub_id, subset)}` once on a machine "
                "with internet that shares HF_HOME (offline, `datasets` reads its own processed cache, which "
                "`hf download` alone does not fill), or unset the offline switch")
    if "gated" in str(exc):
        return (f"Hugging Face dataset {hub_id!r} is gated: accept its terms on "
                f"https://huggingface.co/datasets/{hub_id}, then set HF_TOKEN or run `hf auth login`")
    return f"cannot read Hugging Face dataset {hub_id!r} ({type(exc).__name__}: {exc}); check the id and the subset"


def check_hub_dataset(spec: DatasetSpec) -> None:
    """Before any job: a hub dataset can be read, and has every column its spec maps or filters on."""
    if not spec.source.startswith("hf:"):
        return
    have = hub_columns(spec)
    if have is None:
        return  # e.g. a CSV repo online: its columns are known only after the download (prepare_dataset checks them)
    wanted = {**{f"columns.{k}": ELEMENT_COLUMN.sub(r"\g<col>", v) for k, v in column_plan(spec)[0].items()},
              **{f"where.{k}": k for k in spec.where}}
    missing = {key: col for key, col in wanted.items() if col not in have}
    if missing:
        listed = ", ".join(f"{col!r} (for {key})" for key, col in sorted(missing.items()))
        raise dataset_error(spec.name, spec.source, f"missing column(s) {listed}; the hub dataset has {have}: map its "
                            f"own column names under datasets.{spec.name}.columns")
