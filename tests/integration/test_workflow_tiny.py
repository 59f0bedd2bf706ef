"""End-to-end Snakemake runs of the tiny model: the full DAG, then what reruns after each kind of change."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
COPIED = ["Snakefile", "config.yaml", "rules", "workflow_scripts", "neuronkit", "schemas", "profiles", "envs", "report",
          "data"]
TARGET = "results/tiny/report.json"
HTML = "results/tiny/report.html"
PLOTS = ("variant_scores", "restore_curve", "neurons_per_layer", "nlsr", "overlap")
HARMFUL_SETS = ("harmful_test", "advbench")
DATASETS = (*HARMFUL_SETS, "benign_test", "xstest_safe")
# Plain generations: base on the 4 evaluated sets + the safeguard's 2 training sets and its other test set,
# harmful_novel (7); aligned on the 4 + task_test (5); aligned_mlp (the contrast pair's A) on the patching set (1);
# sntune and rsntune on the 4 (8); the EXPO reference on harmful_test, benign_test, task_test and its calibration set
# (4); attacked and realigned at 2 poison fractions on harmful_test, benign_test, task_test (12); the random-mask
# control at 1 poison fraction on the same 3 (3).
N_GENERATE = 7 + 5 + 1 + 8 + 4 + 12 + 3
N_TASK = 7  # task_test generations are scored for accuracy, not judged
N_PATCH = 2 * 2  # (safety, random) x the tiny k grid, on one dataset
N_DEACT = 3 * 2  # (safety, random, magnitude-matched) x the deactivation datasets
N_JUDGE = N_GENERATE - N_TASK + N_PATCH + N_DEACT
TRAINING = {"sft", "preference", "self_answers", "materialize", "attack", "sntune", "expo"}

pytestmark = pytest.mark.e2e


def _copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow, so a test can edit its code without touching the repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(REPO / "tests" / "integration" / "tiny.yaml", dest / "tiny.yaml")
    return dest


def snakemake(wf: Path, *args: str, extra_configs: tuple[Path, ...] = (), check: bool = True):
    """Run snakemake on the copy with the tiny test sizes (plus any extra config files)."""
    env = {**os.environ, "PYTHONPATH": str(wf), "HF_HUB_OFFLINE": "1"}
    configs = [str(wf / "config.yaml"), str(wf / "tiny.yaml"), *map(str, extra_configs)]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(wf / "Snakefile"), "--directory", str(wf),
           "--cores", "2", *args, "--configfile", *configs]
    proc = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def planned_rules(wf: Path, *extra_configs: Path) -> dict[str, int]:
    """Rule -> job count that a dry run would execute."""
    proc = snakemake(wf, "-n", TARGET, extra_configs=extra_configs)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
            if m.group(1) != "total"}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    wf = _copy_workflow(tmp_path_factory.mktemp("wf"))
    snakemake(wf, TARGET, HTML)
    return wf


def test_report_has_figures_with_dataset_n_and_judge(workflow):
    report = json.loads((workflow / TARGET).read_text())
    assert report["model"] == "tiny"
    assert set(report["variants"]) == {"base", "aligned"}
    assert report["variants"]["aligned"]["method"] == "dpo"
    figures = report["evaluation"]["figures"]
    assert {(f["variant"], f["dataset"]) for f in figures} == {(v, d) for v in ("base", "aligned") for d in DATASETS}
    for fig in figures:
        assert fig["n"] == 6 and fig["judge"] == "refusal_matcher" and 0 <= fig["value"] <= 100
        assert fig["metric"] == ("harmful_score" if fig["dataset"] in HARMFUL_SETS else "over_refusal")
        broken = fig["degenerate"]
        assert broken["metric"] == "degenerate_rate" and broken["n"] == 6 and 0 <= broken["value"] <= 100
        assert fig["answer_perplexity_median"] > 1  # under the tiny base model
    for variant in ("base", "aligned"):  # the scorecard: every figure's degenerate rate and benign-text perplexity
        card = report["evaluation"]["summary"][variant]
        assert set(card["degenerate_rate"]) == set(DATASETS) and card["perplexity"] > 1
        assert report["evaluation"]["perplexity"][variant]["dataset"] == "benign_test"


def test_report_has_restore_curves_safeguard_and_neurons(workflow):
    report = json.loads((workflow / TARGET).read_text())
    points = report["patching"]["points"]
    assert {p["k"] for p in points} == {"0.1", "0.5"}
    for p in points:
        assert p["n"] == 6 and p["judge"] == "refusal_matcher" and p["dataset"] == "harmful_test"
        assert {"harmful_safety", "harmful_random", "restore_safety", "restore_random", "safety_vs_random",
                "degenerate_safety", "degenerate_random", "degenerate_unaligned", "degenerate_aligned"} <= set(p)
        assert isinstance(p["safety_vs_random"]["significant"], bool)
        assert 0 < p["change_share_random"] <= p["change_share_safety"] <= 1  # top-k carries the most of sum S^2
    assert [p["neurons"] for p in sorted(points, key=lambda p: p["neurons"])] == [13, 64]  # of 2 x 64 MLP neurons
    ppl = report["patching"]["perplexity"]
    assert ppl["unaligned"]["perplexity"] > 1 and ppl["safety_k0.1"]["neurons"] == ppl["random_k0.1"]["neurons"] == 13
    assert ppl["safety_k0.5"]["neurons"] == 64
    for p in points:  # every restore point carries the benign-text perplexity at its own k
        assert p["perplexity_safety"] == ppl[f"safety_k{p['k']}"]["perplexity"] > 1
        assert p["perplexity_random"] == ppl[f"random_k{p['k']}"]["perplexity"] > 1
    assert (workflow / "results/tiny/plots/restore_curve.png").stat().st_size > 1000
    guard = report["safeguard"]
    assert guard["k"] == 16 and guard["train"]["datasets"] == ["harmful_train", "benign_train"]
    for name in ("safety", "random", "majority"):
        assert set(guard[name]) == {"harmful_test", "harmful_novel", "advbench"}
        assert all(m["ci95"][0] <= m["accuracy"] <= m["ci95"][1] for m in guard[name].values())
    assert set(guard["paired"]) == {"safety_vs_random", "safety_vs_majority"}
    assert all(guard["test"][t]["n"] + guard["test"][t]["degenerate_dropped"] == 6 for t in guard["test"])
    contrast = report["neurons"]["contrast"]
    assert contrast["meta"]["shape"]["num_layers"] == 2 and len(contrast["neuron2word"]) == 5
    index = pq.read_table(workflow / "results/tiny/neurons/contrast.parquet")
    assert index.num_rows == 128 and index.column("rank").to_pylist() == list(range(128))


def test_patched_generations_are_judged_and_labelled(workflow):
    table = pq.read_table(workflow / "results/tiny/scored/patch_safety_k0.5/harmful_test.parquet")
    assert set(table.column("intervention").to_pylist()) == {"guided:safety:k=64:two_model"}
    assert {"harmful", "refused", "judge"} <= set(table.column_names)


@pytest.mark.parametrize("mode", ["two_model", "fused"])
def test_patching_every_neuron_turns_base_into_the_dags_mlp_only_aligned_model(workflow, mode):
    """The sanity case of the contrast pair the DAG trains (aligned_mlp: adapters on gate/up only): with every MLP
    neuron guided by A, U answers exactly as A does."""
    import torch

    from neuronkit.generate import GenerationConfig, generate_responses
    from neuronkit.models import load_variant
    from neuronkit.patching import patched

    ckpts = workflow / "results/tiny/checkpoints"
    prompts = pq.read_table(workflow / "results/data/harmful_test.parquet").column("prompt").to_pylist()
    gen = GenerationConfig(max_new_tokens=8, batch_size=len(prompts))
    u, tok = load_variant(ckpts / "base")
    a, _ = load_variant(ckpts / "aligned_mlp")
    want = generate_responses(a, tok, prompts, gen)
    assert generate_responses(u, tok, prompts, gen) != want  # A answers differently, so the check can fail
    every = {layer: torch.arange(u.config.intermediate_size) for layer in range(u.config.num_hidden_layers)}
    with patched(u, every, value="guided", mode=mode, a_ckpt=ckpts / "aligned_mlp", u_ckpt=ckpts / "base"):
        assert generate_responses(u, tok, prompts, gen) == want


def test_checkpoints_are_adapters_with_manifests_and_no_pickles(workflow):
    ckpts = workflow / "results" / "tiny" / "checkpoints"
    for variant in ("sft", "aligned"):
        man = json.loads((ckpts / variant / "variant.json").read_text())
        assert man["kind"] == "adapter" and man["inputs"]
        assert (ckpts / variant / "adapter_model.safetensors").exists()
        # alignment reads the own answers to the borderline and contrast sets too: 8 harmful + 3 harmful contrast
        # rows; 8 benign + 6 borderline + 3 benign contrast rows (tiny.yaml keeps every answer of the random model)
        assert {f"answers:{d}" for d in ("harmful_train", "benign_train", "borderline_train", "contrast_train")} <= set(
            man["inputs"])
        assert (man["params"]["data"]["harmful"], man["params"]["data"]["benign"]) == (11, 17)
    aligned = json.loads((ckpts / "aligned" / "variant.json").read_text())
    assert aligned["params"]["n_rows"] == 11 + 17  # two-way pairs: refusal > answer (harmful), answer > refusal
    for variant, parent in (("sft_mlp", "base"), ("aligned_mlp", "sft_mlp")):  # the contrast pair's A: MLP-only
        man = json.loads((ckpts / variant / "variant.json").read_text())
        adapter = json.loads((ckpts / variant / "adapter_config.json").read_text())
        assert man["name"] == variant and Path(man["parent"]).name == parent
        assert sorted(adapter["target_modules"]) == ["gate_proj", "up_proj"]
    assert not list(ckpts.rglob("*.bin")) and not list(ckpts.rglob("*.pt"))


def test_second_run_does_nothing(workflow):
    assert planned_rules(workflow) == {}


def test_generation_change_reruns_generation_not_alignment(workflow, tmp_path):
    override = tmp_path / "gen.yaml"
    override.write_text("models: {tiny: {overrides: {generate: {max_new_tokens: 5}}}}\n")
    plan = planned_rules(workflow, override)
    assert plan.get("generate") == N_GENERATE and plan.get("patch_generate") == N_PATCH
    assert plan.get("deactivate_generate") == N_DEACT
    assert plan.get("judge") == N_JUDGE and plan.get("report") == 1
    assert not (TRAINING | {"contrast", "plnd"}) & set(plan)


def test_a_control_seed_change_redraws_the_controls_not_plnd_or_the_safety_rows(workflow, tmp_path):
    override = tmp_path / "seed.yaml"
    override.write_text("models: {tiny: {overrides: {deactivation: {random_seed: 1}}}}\n")
    plan = planned_rules(workflow, override)
    assert plan.get("deactivation_control") == 2  # random and magnitude-matched, drawn once each
    assert plan.get("deactivate_generate") == N_DEACT // 3 * 2  # the two controls' rows; the safety rows stay
    assert plan.get("deactivation_perplexity") == 1 and plan.get("sntune_section") == 1
    assert not (TRAINING | {"plnd", "generate"}) & set(plan)


def test_the_specific_plnd_selection_adds_its_ranking_and_reruns_what_uses_the_set_but_not_plnd(workflow, tmp_path):
    override = tmp_path / "specific.yaml"
    override.write_text("models: {tiny: {overrides: {plnd: {selection: specific}}}}\n")
    plan = planned_rules(workflow, override)
    assert plan.get("plnd_specific") == 1 and "plnd" not in plan  # the intersection stays: it sets the counts
    assert plan.get("deactivation_control") == 2 and plan.get("deactivate_generate") == N_DEACT
    assert plan.get("sntune") == 2 and plan.get("sntune_section") == 1  # SN-Tune and RSN-Tune tune the new set
    assert not ((TRAINING - {"sntune"}) | {"contrast", "patch_generate"}) & set(plan)


def test_k_grid_change_reruns_patching_but_not_alignment_or_contrast(workflow, tmp_path):
    override = tmp_path / "grid.yaml"
    override.write_text("models: {tiny: {overrides: {patching: {k_grid: [0.1, 0.25]}}}}\n")
    plan = planned_rules(workflow, override)
    assert plan.get("patch_generate") == 2 and plan.get("judge") == 2  # only the new k, safety and random
    assert plan.get("patching_section") == 1 and plan.get("report") == 1
    assert not (TRAINING | {"contrast", "generate", "plnd"}) & set(plan)


def test_another_helpfulness_dataset_reruns_the_helpful_contrast_and_the_overlap_only(workflow, tmp_path):
    """contrast.helpful_dataset is the helpful job's own key: the safety contrast and the patching stay cached."""
    override = tmp_path / "helpful.yaml"
    override.write_text("contrast: {helpful_dataset: benign_test}\n")
    plan = planned_rules(workflow, override)
    assert plan == {"contrast": 1, "overlap_section": 1, "report": 1}


def test_another_preference_method_is_scored_on_demand_beside_the_default(workflow, tmp_path):
    override = tmp_path / "kto.yaml"
    override.write_text("evaluation: {variants: [base, aligned, aligned_kto]}\n")
    plan = planned_rules(workflow, override)
    assert plan.get("preference_method") == 1 and "preference" not in plan and "sft" not in plan
    assert plan.get("generate") == len(DATASETS) and plan.get("variant_perplexity") == 1
    assert plan.get("evaluation_section") == 1 and plan.get("report") == 1


def test_code_change_reruns_the_rules_using_it(workflow):
    lens_py = workflow / "neuronkit" / "lens.py"
    original = lens_py.read_text()
    lens_py.write_text(original + "\n# a change\n")
    try:
        plan = planned_rules(workflow)
    finally:
        lens_py.write_text(original)
    assert plan == {"neurons_section": 1, "report": 1}
    assert planned_rules(workflow) == {}


def test_editing_a_module_deep_in_the_import_graph_reruns_exactly_the_rules_that_import_it(workflow):
    """stats.py is imported by scores/contrast (top level) and by patching (inside a function): contrast and the two
    patching rules rerun for their own code, and everything downstream of the contrast index for its input."""
    stats_py = workflow / "neuronkit" / "stats.py"
    original = stats_py.read_text()
    stats_py.write_text(original + "\n# a change\n")
    try:
        plan = planned_rules(workflow)
    finally:
        stats_py.write_text(original)
    assert plan == {"contrast": 2, "patch_generate": N_PATCH, "patch_perplexity": 1, "judge": N_PATCH,
                    "patching_section": 1, "safeguard": 1, "neurons_section": 1, "overlap_section": 1, "report": 1}
    assert planned_rules(workflow) == {}


def test_report_has_sntune_and_nlsr_sections(workflow):
    report = json.loads((workflow / TARGET).read_text())
    sn = report["sntune"]
    assert sn["neurons"]["safety"]["total"] > 0
    assert sn["neurons"]["rsn"]["total"] <= sn["neurons"]["safety"]["total"]
    runs = sn["tuning"]["runs"]
    assert set(runs) == {"sntune", "rsntune"} and 0 < runs["sntune"]["trained_fraction"] < 1
    assert runs["sntune"]["n_docs"] == 8 + 4 and runs["sntune"]["n_benign_docs"] == 4  # tiny mixes 4 benign docs
    assert runs["rsntune"]["trained_entries"] <= runs["sntune"]["trained_entries"]
    assert runs["sntune"]["n_massive_down_frozen"] == 0  # sntune.massive_down_ratio is off by default
    assert {f["variant"] for f in sn["deactivation"]["figures"]} == {"aligned", "deact_safety", "deact_random",
                                                                      "deact_magnitude"}
    assert {(t["second"], t["dataset"]) for t in sn["deactivation"]["paired"]} == {
        (c, d) for c in ("deact_random", "deact_magnitude") for d in ("harmful_test", "benign_test")}
    assert {"before", "sntune", "rsntune"} <= set(sn["perplexity"])
    deact_ppl = sn["deactivation"]["perplexity"]
    assert deact_ppl["safety"]["neurons"] == deact_ppl["random"]["neurons"] == deact_ppl["magnitude"]["neurons"] \
        == sn["neurons"]["safety"]["total"]
    assert deact_ppl["intact"]["perplexity"] > 0 and deact_ppl["text"] == "benign_test"
    for control in ("random", "magnitude"):  # each control's neurons, drawn once, as an index beside the safety set
        meta = json.loads((workflow / f"results/tiny/neurons/deact_{control}.json").read_text())
        assert meta["control"] == control
    nlsr = report["nlsr"]
    variants = {v["variant"]: v for v in nlsr["variants"]}
    assert set(variants) == {"aligned", "reference", "attacked_p0.0", "nlsr_p0.0", "attacked_p0.25", "nlsr_p0.25",
                             "nlsr_random_p0.25"}
    for v in variants.values():
        assert v["figures"]["task_accuracy"]["n"] == 6 and "harmful_score:harmful_test" in v["figures"]
        assert v["perplexity"] == nlsr["perplexity"][v["variant"]]["perplexity"] > 1
    assert set(nlsr["realign"]) == {"nlsr_p0.0", "nlsr_p0.25"}
    paired = {(t["first"], t["second"], t["dataset"]) for t in nlsr["paired"]}
    assert ("nlsr_p0.25", "nlsr_random_p0.25", "harmful_test") in paired
    assert ("nlsr_p0.0", "attacked_p0.0", "benign_test") in paired
    assert (workflow / "results/tiny/plots/nlsr.png").stat().st_size > 1000
    mix = pq.read_table(workflow / "results/tiny/nlsr/mix_p0.25.parquet")
    assert mix.column("label").to_pylist().count("harmful") == 4 and mix.num_rows == 16


def test_report_has_general_ability_from_lm_eval_for_the_listed_variants(workflow):
    general = json.loads((workflow / TARGET).read_text())["general"]
    figures = {f["variant"]: f for f in general["figures"]}
    assert set(figures) == {"base", "sntune", "nlsr_p0.25"}  # tiny: general.variants, nlsr at random_control_p
    for fig in figures.values():
        assert fig["dataset"] == "mmlu_slice_cloze" and fig["n"] == 8 and fig["judge"] == "lm-eval mmlu_slice_cloze acc"
        assert fig["ci95"][0] <= fig["value"] <= fig["ci95"][1]
    assert {(t["first"], t["second"]) for t in general["paired"]} == {("sntune", "base"), ("nlsr_p0.25", "base")}
    assert "General ability table" in (workflow / HTML).read_text()


def test_report_has_the_cross_method_overlap(workflow):
    overlap = json.loads((workflow / TARGET).read_text())["overlap"]
    methods = ["contrast", "helpful", "plnd", "snip", "wanda", "lowrank"]
    assert [m["name"] for m in overlap["methods"]] == methods
    mlp_pairs = {(p["a"], p["b"]) for p in overlap["pairs"] if p["module"] == "mlp"}
    assert len(mlp_pairs) == 15  # every pair of the six methods on the MLP neurons
    for pair in overlap["pairs"]:  # tiny: dense methods select 25% of each module (overlap.dense_k)
        assert pair["k"] >= 1 and 0 <= pair["jaccard"] <= 1 and len(pair["per_layer"]) == 2, pair
        assert pair["spearman"] is None or -1 <= pair["spearman"] <= 1
    assert overlap["matrix"]["mlp"]["labels"] == methods


def test_the_helpfulness_neurons_are_the_same_contrast_on_benign_prompts_and_overlap_the_safety_neurons(workflow):
    """The alignment tax: helpful = the contrast of the same pair on contrast.helpful_dataset; the overlap section
    sets it against the safety neurons at matched size, pooled and per layer, beside chance."""
    from neuronkit.neurons import NeuronIndex

    safety = NeuronIndex.read(workflow / "results/tiny/neurons/contrast.parquet")
    helpful = NeuronIndex.read(workflow / "results/tiny/neurons/helpful.parquet")
    assert (safety.meta["dataset"], helpful.meta["dataset"]) == ("harmful_train", "benign_train")
    assert safety.meta["variants"] == helpful.meta["variants"] == {"aligned": "aligned_mlp", "unaligned": "base"}
    assert len(helpful) == len(safety) == 128 and not np.array_equal(helpful.score, safety.score)
    overlap = json.loads((workflow / TARGET).read_text())["overlap"]
    (tax,) = [p for p in overlap["pairs"] if (p["a"], p["b"], p["module"]) == ("contrast", "helpful", "mlp")]
    assert tax["k"] == 32 and tax["jaccard_random"] == pytest.approx(32 / (2 * 128 - 32))  # dense_k 25% of 128
    assert [layer["layer"] for layer in tax["per_layer"]] == [0, 1] and sum(lay["k"] for lay in tax["per_layer"]) <= 32
    for lay in tax["per_layer"]:  # chance inside a layer of 64 neurons at that layer's matched size
        chance = lay["k"] / (2 * 64 - lay["k"]) if lay["k"] else None
        assert lay["jaccard_random"] == (pytest.approx(chance) if chance else None)


def test_html_report_embeds_every_plot(workflow):
    html = (workflow / HTML).read_text()
    for name in ("variant_scores", "restore_curve", "neurons_per_layer", "nlsr", "overlap_heatmap"):
        assert f'id="plot-{name}"' in html, name
    assert html.count("data:image/png;base64,") == 5 and "http://" not in html and "https://" not in html
    for name in PLOTS:
        assert (workflow / f"results/tiny/plots/{name}.png").stat().st_size > 1000, name


def test_snakemake_report_lists_the_marked_plots(workflow, tmp_path):
    out = tmp_path / "snakemake_report.html"
    snakemake(workflow, "--report", str(out), TARGET, HTML)
    text = out.read_text()
    for name in PLOTS:
        assert f"{name}.png" in text, name
    assert "report.html" in text and "cross-method overlap" in text


def test_llama3_dry_run_builds_the_full_dag_offline(tmp_path):
    wf = _copy_workflow(tmp_path / "wf")
    env = {**os.environ, "PYTHONPATH": str(wf), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(wf / "Snakefile"),
                           "--directory", str(wf), "results/llama3/report.json"],
                          cwd=wf, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule in ("materialize", "self_answers", "sft", "preference", "generate", "judge", "contrast",
                 "patch_generate", "patch_perplexity", "safeguard", "patching_section", "plnd", "sntune",
                 "deactivate_generate", "expo", "attack", "safety_masks", "nlsr", "nlsr_section", "report"):
        assert re.search(rf"^{rule}\s+\d+", out, re.M), rule
    for rule in ("sft", "contrast", "patch_generate", "plnd", "sntune", "attack"):
        block = out.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
        assert "gpu=1" in block, rule
    # (safety, random) x the llama3 k grid x patching.datasets (harmful_test, advbench)
    assert out.count("rule patch_generate:") == 2 * 5 * 2
    assert not (wf / "results").exists()
