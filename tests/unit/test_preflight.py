"""The errors a GPU user meets before any job: gated model without a token, a hub id missing from the offline cache,
a hub dataset without the mapped column, GPU jobs on a machine without CUDA under the local executor."""

from __future__ import annotations

import pytest

from neuronkit import preflight
from tests.hub_cache import (ADVBENCH_ID, GATED_ID, LLAMA3_ID, MODEL_ID, PREFERENCE_ID, TOKEN, hub_env, local_hub,
                             run_checks)

PREF = {"source": f"hf:{PREFERENCE_ID}", "split": "train", "label": "benign"}


@pytest.fixture(scope="module")
def offline(hub_cache) -> dict:
    """Every offline check, in one process that reads the filled cache with the hub switched off."""
    return run_checks(hub_cache.offline_env(), [
        ("cached", "model", ("hubllama", "source", MODEL_ID)),
        ("absent", "model", ("hubllama", "source", "test-org/not-downloaded")),
        ("config_only", "model", ("llama3", "source", LLAMA3_ID)),
        ("dataset_ok", "dataset", ("advbench", {"source": f"hf:{ADVBENCH_ID}", "columns": {"prompt": "goal"},
                                                "label": "harmful"})),
        ("no_column", "dataset", ("pref", {**PREF, "columns": {"prompt": "prompt", "chosen": "preferred"}})),
        ("no_where_column", "dataset", ("pref", {**PREF, "where": {"safety": ["safe"]}})),
        ("dataset_absent", "dataset", ("other", {"source": "hf:test-org/nope", "label": "harmful"})),
    ])


def test_a_cached_hub_model_and_dataset_pass(offline):
    assert offline["cached"] is None and offline["dataset_ok"] is None


def test_a_hub_id_missing_from_the_offline_cache_names_it_and_the_download(offline):
    msg = offline["absent"]
    assert msg.startswith("models.hubllama.source: 'test-org/not-downloaded' is not in the local Hugging Face cache")
    assert "hub is offline (HF_HUB_OFFLINE=1)" in msg and "run `hf download test-org/not-downloaded`" in msg
    assert "or unset HF_HUB_OFFLINE" in msg


def test_a_partly_downloaded_model_names_the_missing_files(offline):
    """Only config.json was fetched (hf download <id> config.json): the weights and tokenizer are named."""
    msg = offline["config_only"]
    assert f"models.llama3.source: {LLAMA3_ID!r} is not in the local Hugging Face cache" in msg
    assert "; missing tokenizer_config.json, model.safetensors (or model.safetensors.index.json" in msg


def test_a_hub_dataset_without_the_mapped_column_names_dataset_column_and_fix(offline):
    msg = offline["no_column"]
    assert msg.startswith(f"DatasetError: dataset 'pref' (hf:{PREFERENCE_ID}): missing column(s) 'preferred' "
                          "(for columns.chosen)")
    assert "the hub dataset has ['prompt', 'chosen', 'rejected']" in msg and "under datasets.pref.columns" in msg
    assert "'safety' (for where.safety)" in offline["no_where_column"]


def test_a_hub_dataset_missing_from_the_offline_cache_says_how_to_fill_it(offline):
    msg = offline["dataset_absent"]
    assert msg.startswith("DatasetError: dataset 'other' (hf:test-org/nope): Hugging Face dataset 'test-org/nope' is "
                          "not in the local datasets cache")
    assert "run `python -c \"import datasets; datasets.load_dataset('test-org/nope')\"`" in msg
    assert "`hf download` alone does not fill" in msg


def test_a_gated_model_without_a_token_says_to_accept_and_log_in(hub_cache, tmp_path):
    """Online (against the stand-in hub, which answers 401 GatedRepo as the hub does) and nothing cached."""
    with local_hub(list(hub_cache.repos)) as (endpoint, _):
        env = hub_env(tmp_path / "empty_home", endpoint)
        found = run_checks(env, [("gated", "model", ("llama3", "source", GATED_ID))])
        granted = run_checks({**env, "HF_TOKEN": TOKEN}, [("gated", "model", ("llama3", "source", GATED_ID))])
    msg = found["gated"]
    assert msg.startswith(f"models.llama3.source: {GATED_ID!r} is a gated model and no Hugging Face token was found")
    assert f"accept its licence on https://huggingface.co/{GATED_ID}" in msg
    assert "set HF_TOKEN or run `hf auth login`" in msg
    assert granted["gated"] is None  # with a token the check fetches config.json, and the jobs download the rest


def test_gpu_jobs_without_cuda_under_the_local_executor(monkeypatch):
    monkeypatch.setattr(preflight, "cuda_available", lambda: False)
    msg = preflight.gpu_problem("llama3", 1, local=True)
    assert msg.startswith("models.llama3.resources.gpu is 1, but this machine has no CUDA device")
    assert "--profile profiles/slurm" in msg and "set models.llama3.resources.gpu: 0" in msg
    assert preflight.gpu_problem("llama3", 1, local=False) is None  # SLURM: the node has the GPU
    assert preflight.gpu_problem("smollm2", 0, local=True) is None
    monkeypatch.setattr(preflight, "cuda_available", lambda: True)
    assert preflight.gpu_problem("llama3", 1, local=True) is None


def test_run_problems_check_only_the_models_the_run_builds(monkeypatch):
    monkeypatch.setattr(preflight, "cuda_available", lambda: False)
    config = {"models": {"tiny": {"source": "builtin:tiny"}, "llama3": {"source": "org/absent"}}}
    assert preflight.run_problems(config, ["tiny"], {}, local=True) == []
    assert len(preflight.run_problems(config, ["tiny"], {"tiny": 1}, local=True)) == 1


def test_paths_and_builtins_are_not_hub_ids(tmp_path):
    assert preflight.is_hub_id("meta-llama/Meta-Llama-3-8B-Instruct") and preflight.is_hub_id("gpt2")
    assert not preflight.is_hub_id("builtin:tiny") and not preflight.is_hub_id(str(tmp_path))
    assert not preflight.is_hub_id("./models/x") and not preflight.is_hub_id("/abs/path/x")
