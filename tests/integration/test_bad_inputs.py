"""Bad inputs fail before compute, with messages that name the field, file or row; nothing partial is left."""

from __future__ import annotations

import json

import pytest

from .test_workflow_tiny import _copy_workflow, snakemake

pytestmark = pytest.mark.e2e


@pytest.fixture
def wf(tmp_path):
    return _copy_workflow(tmp_path / "wf")


def _fail(wf, target, config_text):
    extra = wf / "bad.yaml"
    extra.write_text(config_text)
    proc = snakemake(wf, target, extra_configs=(extra,), check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_schema_violation_stops_before_any_job(wf):
    out = _fail(wf, "results/tiny/report.json", "models: {tiny: {threads: 0}}\n")
    assert "models.tiny.threads: 0 is less than the minimum of 1" in out
    assert not (wf / "results").exists()


def test_dataset_missing_a_mapped_column_names_file_and_column(wf):
    (wf / "bad.csv").write_text("question,answer\nhow?,so\n")
    out = _fail(wf, "results/data/bad.parquet",
                "datasets: {bad: {source: bad.csv, columns: {prompt: goal}, label: harmful}}\n")
    assert "goal" in out and "bad.csv" in out and "question" in out
    assert not (wf / "results" / "data" / "bad.parquet").exists()


def _dry_run_fails(wf):
    proc = snakemake(wf, "-n", "results/tiny/report.json", check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_a_missing_vendored_benchmark_is_named_before_any_job(wf):
    (wf / "data" / "benchmarks" / "advbench.csv").unlink()
    out = _dry_run_fails(wf)
    assert "dataset 'advbench'" in out and "advbench.csv" in out and "no such file" in out
    assert not (wf / "results").exists()


def test_a_renamed_column_in_a_vendored_benchmark_is_named_before_any_job(wf):
    path = wf / "data" / "benchmarks" / "harmbench_val.csv"
    path.write_text(path.read_text().replace("Behavior,", "Behaviour,", 1))
    out = _dry_run_fails(wf)
    assert "dataset 'harmbench_val'" in out and "harmbench_val.csv" in out and "'Behavior' (for columns.prompt)" in out
    assert not (wf / "results").exists()


def test_empty_dataset_is_an_error(wf):
    (wf / "empty.csv").write_text("goal\n")
    out = _fail(wf, "results/data/empty.parquet",
                "datasets: {empty: {source: empty.csv, columns: {prompt: goal}, label: harmful}}\n")
    assert "empty" in out.lower() and "empty.csv" in out
    assert not (wf / "results" / "data" / "empty.parquet").exists()


def test_unknown_architecture_is_refused_before_loading_weights(wf):
    model_dir = wf / "gpt2model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    out = _fail(wf, "results/weird/checkpoints/base", f"models: {{weird: {{source: {model_dir}}}}}\n")
    assert "unknown model architecture 'gpt2'" in out
    assert not (wf / "results" / "weird" / "checkpoints" / "base").exists()


@pytest.mark.parametrize("name", ["../../../escape_ds", "harmful.test"])
def test_a_dataset_name_that_is_not_a_plain_word_is_refused_before_any_job(wf, name):
    out = _fail(wf, "results/tiny/report.json",
                f"datasets: {{'{name}': {{source: 'builtin:harmful', split: test, n: 4}}}}\n"
                f"evaluation: {{harmful: ['{name}']}}\n")
    assert f"datasets: '{name}' does not match" in out and "KeyError" not in out
    assert not (wf / "results").exists() and not (wf.parent / "escape_ds.parquet").exists()
    assert not list(wf.glob("*.log")) and not (wf / "benchmarks").exists()


@pytest.mark.parametrize("override, message", [
    ("safeguard: {k: 1.5}", "safeguard.k (model tiny): 1.5 is neither a whole count nor a fraction below 1"),
    ("safeguard: {k: 100000}", "safeguard.k (model tiny): 100000 exceeds the model's 128 MLP neurons"),
    ("patching: {k_grid: [0.1, 1000]}", "patching.k_grid (model tiny): 1000 exceeds the model's 128 MLP neurons"),
    ("plnd: {ffn_top_k: 65}", "plnd.ffn_top_k (model tiny): 65 exceeds the 64 dims per layer"),
])
def test_a_k_that_does_not_fit_the_model_is_refused_before_any_job(wf, override, message):
    out = _dry_run_fails_with(wf, f"models: {{tiny: {{overrides: {{{override}}}}}}}\n")
    assert message in out and "Traceback" not in out


@pytest.mark.parametrize("override, message", [
    ("tiny: {heads: 3}", "models.tiny.tiny.hidden (32) must be divisible by tiny.heads (3)"),
    ("source: 'builtin:nope'", "models.tiny.source: unknown builtin 'builtin:nope'"),
])
def test_a_model_that_cannot_be_built_is_refused_before_any_job(wf, override, message):
    out = _dry_run_fails_with(wf, f"models: {{tiny: {{{override}}}}}\n")
    assert message in out and "Traceback" not in out


def _dry_run_fails_with(wf, config_text):
    extra = wf / "bad.yaml"
    extra.write_text(config_text)
    proc = snakemake(wf, "-n", "results/tiny/report.json", extra_configs=(extra,), check=False)
    assert proc.returncode != 0
    assert not (wf / "results").exists()
    return proc.stdout + proc.stderr
