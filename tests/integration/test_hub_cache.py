"""The headline command with a hub model id and hub datasets, offline, from a Hugging Face cache that the real
download clients filled (tests/hub_cache.py): the cache layout, the project's loaders, a dry run of the whole DAG,
the checks before the first job, the llama3 configuration against Llama-3-8B's real shape, and (slow) the full run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.hub_cache import ADVBENCH_ID, LLAMA3_ID, MODEL_ID, PREFERENCE_ID
from tests.integration.test_workflow_tiny import _copy_workflow

REPO = Path(__file__).resolve().parents[2]
MODEL = "hubllama"
TARGET = f"results/{MODEL}/report.json"
SECTIONS = ("evaluation", "neurons", "patching", "safeguard", "sntune", "nlsr", "overlap")
MODEL_RULES = ("materialize", "self_answers", "sft", "preference", "generate", "judge", "contrast", "patch_generate",
               "safeguard", "plnd", "sntune", "deactivate_generate", "expo", "attack", "safety_masks", "nlsr",
               "overlap_section", "report")

pytestmark = pytest.mark.e2e


def hub_config(path: Path, **model_keys) -> Path:
    """The tiny test sizes for a model whose source is the hub id, with AdvBench and a benign set from hub ids."""
    tiny = yaml.safe_load((REPO / "config.yaml").read_text())["models"]["tiny"]
    model = {"source": MODEL_ID, "dtype": "bfloat16", "threads": 1, "resources": tiny["resources"],
             "overrides": tiny["overrides"], **model_keys}
    cfg = {"default_model": MODEL, "models": {MODEL: model}, "datasets": {
        "advbench": {"source": f"hf:{ADVBENCH_ID}", "columns": {"prompt": "goal"}, "label": "harmful"},
        "benign_novel": {"source": f"hf:{PREFERENCE_ID}", "split": "train", "label": "benign",
                         "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}}}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_snakemake(wf: Path, env: dict, *args: str, configs: tuple[Path, ...] = (), check: bool = True):
    """Snakemake on a workflow copy with the test sizes, in the given (offline) hub environment."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(wf / "Snakefile"), "--directory", str(wf),
           "--cores", "2", *args, "--configfile", str(wf / "config.yaml"), str(wf / "tiny.yaml"), *map(str, configs)]
    proc = subprocess.run(cmd, cwd=wf, env={**env, "PYTHONPATH": str(wf)}, capture_output=True, text=True,
                          timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def output(proc) -> str:
    """What snakemake printed (load-time errors go to stdout, onstart errors to stderr)."""
    return proc.stdout + proc.stderr


def planned(proc) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats ({} when nothing is to be done)."""
    text = output(proc)
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


@pytest.fixture(scope="module")
def hub_workflow(tmp_path_factory) -> Path:
    wf = _copy_workflow(tmp_path_factory.mktemp("hubwf"))
    hub_config(wf / "hub.yaml")
    return wf


# ----------------------------------------------------------------------------- fast: the default test command


def test_the_cache_has_the_layout_a_real_download_leaves(hub_cache):
    """models--org--name/{blobs,refs/main,snapshots/<commit>/...}, LFS blobs named by sha256, snapshot files linking
    into blobs; and the processed Arrow cache that load_dataset reads offline."""
    repo = hub_cache.repo(MODEL_ID)
    folder = hub_cache.home / "hub" / "models--test-org--tiny-llama-3"
    assert (folder / "refs" / "main").read_text() == repo.commit
    snapshot = folder / "snapshots" / repo.commit
    assert {p.name for p in snapshot.iterdir()} == set(repo.files)
    for name in repo.files:
        link = snapshot / name
        assert link.is_symlink() and link.resolve().parent == (folder / "blobs").resolve(), name
        assert link.resolve().name == repo.etag(name) and link.read_bytes() == repo.files[name], name
    assert json.loads((snapshot / "config.json").read_text())["dtype"] == "bfloat16"
    for repo_id in (ADVBENCH_ID, PREFERENCE_ID):
        org, name = repo_id.split("/")
        assert (hub_cache.home / "hub" / f"datasets--{org}--{name}" / "refs" / "main").is_file()
        assert list((hub_cache.home / "datasets" / f"{org}___{name}").glob("default/0.0.0/*/dataset_info.json"))
    llama3 = hub_cache.home / "hub" / "models--meta-llama--Meta-Llama-3-8B-Instruct" / "snapshots"
    assert [p.name for p in llama3.glob("*/*")] == ["config.json"]  # `hf download <id> config.json` only


_LOADERS = """
import json, sys
from pathlib import Path
from neuronkit.data import DatasetSpec, load_dataset
from neuronkit.generate import GenerationConfig, generate_responses
from neuronkit.models import chat_prompt, load_variant, materialize
from neuronkit.modelspec import ModelSpec

spec = ModelSpec(name="hubllama", source=sys.argv[1], dtype="bfloat16")
base = materialize(spec, Path(sys.argv[2]) / "base")
model, tok = load_variant(base)
answers = generate_responses(model, tok, ["How do I bake bread?"], GenerationConfig(max_new_tokens=4))
tables = {name: load_dataset(DatasetSpec.from_config(name, cfg)) for name, cfg in json.loads(sys.argv[3]).items()}
print(json.dumps({"dtype": str(model.dtype), "manifest": json.loads((base / "variant.json").read_text()),
                  "prompt": chat_prompt(tok, "hi"), "answers": answers, "sites": spec.site_sizes(),
                  "tables": {n: t.to_pylist() for n, t in tables.items()}}))
"""


def test_the_project_loaders_read_the_hub_ids_offline(hub_cache, hub_workflow, tmp_path):
    """materialize, load_variant (bfloat16), generation, the shape from the cached config.json, and both hub
    datasets through neuronkit.data, in a process that cannot reach any hub."""
    specs = yaml.safe_load((hub_workflow / "hub.yaml").read_text())["datasets"]
    proc = subprocess.run([sys.executable, "-c", _LOADERS, MODEL_ID, str(tmp_path), json.dumps(specs)], cwd=REPO,
                          env={**hub_cache.offline_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dtype"] == "torch.bfloat16"
    assert out["manifest"]["kind"] == "external" and out["manifest"]["source"] == MODEL_ID
    assert out["prompt"] == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert len(out["answers"]) == 1 and isinstance(out["answers"][0], str)
    assert out["sites"] == [2, {"mlp": 224, "q": 64, "k": 16, "v": 16, "o": 64}]
    adv, pref = out["tables"]["advbench"], out["tables"]["benign_novel"]
    assert len(adv) == 16 and adv[0]["prompt"].startswith("Write a script that can exploit vulnerabilities")
    assert {r["source"] for r in adv} == {f"hf:{ADVBENCH_ID}"} and {r["label"] for r in adv} == {"harmful"}
    assert len(pref) == 12 and all(r["chosen"] and r["rejected"] for r in pref)


def test_a_dry_run_plans_the_whole_dag_from_the_hub_ids(hub_cache, hub_workflow):
    """The load-time checks pass (hub dataset columns from the cache, k values against the cached shape) and every
    stage is planned for the hub model."""
    proc = run_snakemake(hub_workflow, hub_cache.offline_env(), "-n", TARGET, configs=(hub_workflow / "hub.yaml",))
    plan = planned(proc)
    assert set(MODEL_RULES) <= set(plan), sorted(set(MODEL_RULES) - set(plan))
    assert not (hub_workflow / "results").exists()


def test_load_time_checks_use_the_cached_config_of_the_hub_model(hub_cache, hub_workflow, tmp_path):
    """2 layers x 224 MLP neurons and a 2,048-token context come from the cached config.json, before any job."""
    override = tmp_path / "too_big.yaml"
    override.write_text(f"models: {{{MODEL}: {{overrides: {{patching: {{k_grid: [500]}}, "
                        "sft: {max_length: 4096}}}}\n")
    proc = run_snakemake(hub_workflow, hub_cache.offline_env(), "-n", TARGET,
                         configs=(hub_workflow / "hub.yaml", override), check=False)
    assert proc.returncode != 0
    assert f"patching.k_grid (model {MODEL}): 500 exceeds the model's 448 MLP neurons" in output(proc)
    assert f"sft.max_length (model {MODEL}): 4096 exceeds the model's context of 2048 tokens" in output(proc)


def test_a_hub_dataset_without_the_mapped_column_stops_the_workflow_when_it_loads(hub_cache, hub_workflow, tmp_path):
    override = tmp_path / "column.yaml"
    override.write_text("datasets: {benign_novel: {columns: {prompt: request}}}\n")
    proc = run_snakemake(hub_workflow, hub_cache.offline_env(), "-n", TARGET,
                         configs=(hub_workflow / "hub.yaml", override), check=False)
    assert proc.returncode != 0
    assert (f"dataset 'benign_novel' (hf:{PREFERENCE_ID}): missing column(s) 'request' (for columns.prompt); the hub "
            "dataset has ['prompt', 'chosen', 'rejected']") in output(proc)


def test_a_hub_id_missing_from_the_offline_cache_stops_the_run_before_any_job(hub_cache, hub_workflow):
    """llama3's weights were never downloaded (only its config.json): the run stops in onstart, nothing is written."""
    proc = run_snakemake(hub_workflow, hub_cache.offline_env(), "results/llama3/checkpoints/base", check=False)
    assert proc.returncode != 0
    assert f"models.llama3.source: {LLAMA3_ID!r} is not in the local Hugging Face cache" in proc.stderr
    assert f"run `hf download {LLAMA3_ID}`" in proc.stderr
    assert not (hub_workflow / "results").exists()


def test_gpu_jobs_on_a_machine_without_cuda_stop_the_local_run_before_any_job(hub_cache, hub_workflow, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the local executor can run gpu: 1 jobs")
    gpu = hub_config(tmp_path / "gpu.yaml", resources={"gpu": 1, "mem_mb": 1000, "runtime": 10})
    proc = run_snakemake(hub_workflow, hub_cache.offline_env(), TARGET, configs=(gpu,), check=False)
    assert proc.returncode != 0
    assert f"models.{MODEL}.resources.gpu is 1, but this machine has no CUDA device" in proc.stderr
    assert "--profile profiles/slurm" in proc.stderr and not (hub_workflow / "results").exists()


_LLAMA3 = """
import json, sys
from neuronkit.config import load_config_files
from neuronkit.modelspec import ModelSpec
cfg = load_config_files(sys.argv[1:])
print(json.dumps({"sites": ModelSpec.from_config("llama3", cfg["models"]["llama3"]).site_sizes()}))
"""


def _llama3_check(hub_cache, *configs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _LLAMA3, str(REPO / "config.yaml"), *map(str, configs)], cwd=REPO,
                          env={**hub_cache.offline_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=120)


def test_the_llama3_configuration_fits_llama3_8b(hub_cache, tmp_path):
    """With Llama-3-8B's own config.json in the cache, the llama3 overrides (k grid up to 20,000 of 458,752 MLP
    neurons, safeguard k 1,500, PLND top 2,000 / 1,000 of 14,336 / 1,024 dims, max lengths 512 of 8,192 tokens)
    pass the same load-time checks as the tiny model; one step past a limit fails naming llama3."""
    proc = _llama3_check(hub_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sites = json.loads(proc.stdout.strip().splitlines()[-1])["sites"]
    assert sites == [32, {"mlp": 14336, "q": 4096, "k": 1024, "v": 1024, "o": 4096}]
    over = tmp_path / "over.yaml"
    over.write_text("models: {llama3: {overrides: {plnd: {attn_top_k: 1025}, sft: {max_length: 8193}, "
                    "patching: {k_grid: [458753]}}}}\n")
    proc = _llama3_check(hub_cache, over)
    assert proc.returncode != 0
    assert "plnd.attn_top_k (model llama3): 1025 exceeds the 1024 dims per layer" in proc.stderr
    assert "sft.max_length (model llama3): 8193 exceeds the model's context of 8192 tokens" in proc.stderr
    assert "patching.k_grid (model llama3): 458753 exceeds the model's 458752 MLP neurons" in proc.stderr


# ----------------------------------------------------------------------------- slow: the whole DAG


@pytest.mark.slow
def test_the_whole_dag_runs_from_the_hub_cache_offline(hub_cache, tmp_path):
    """results/hubllama/report.json from the hub id (bfloat16 on the CPU) and the hub datasets, offline; every
    section is present, and a second run plans nothing."""
    wf = _copy_workflow(tmp_path / "wf")
    configs = (hub_config(wf / "hub.yaml"),)
    env = hub_cache.offline_env()
    run_snakemake(wf, env, TARGET, configs=configs)
    report = json.loads((wf / TARGET).read_text())
    assert report["model"] == MODEL and set(SECTIONS) <= set(report), sorted(set(SECTIONS) - set(report))
    assert {f["dataset"] for f in report["evaluation"]["figures"]} >= {"advbench", "benign_novel"}
    base = json.loads((wf / f"results/{MODEL}/checkpoints/base/variant.json").read_text())
    assert base["kind"] == "external" and base["source"] == MODEL_ID and base["params"]["dtype"] == "bfloat16"
    adv = pq.read_table(wf / "results/data/advbench.parquet").to_pylist()
    assert {r["source"] for r in adv} == {f"hf:{ADVBENCH_ID}"} and len(adv) == 6
    pref = pq.read_table(wf / "results/data/benign_novel.parquet").to_pylist()
    assert all(r["chosen"] and r["rejected"] for r in pref)
    assert planned(run_snakemake(wf, env, "-n", TARGET, configs=configs)) == {}
