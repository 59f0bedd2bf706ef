"""Restore ratio, paired tests, perplexity, the safeguard probe and neuron2word."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from neuronkit.data import write_table
from neuronkit.evaluate import restore_ratio, restore_section
from neuronkit.perplexity import perplexity
from neuronkit.lens import neuron2word, neuron_tokens
from neuronkit.models import load_variant
from neuronkit.significance import mcnemar_exact, mcnemar_from_discordant
from neuronkit.neurons import NeuronIndex
from neuronkit.archs import model_shape
from neuronkit.safeguard import (classification_metrics, fit_logistic, labelled_prompts,
                                 majority_predictions, paired_accuracy_tests, predict, unsafe_labels)


def test_restore_ratio_reads_on_the_safety_scale():
    assert restore_ratio(10.0, 80.0, 10.0) == 1.0  # patched as safe as A
    assert restore_ratio(80.0, 80.0, 10.0) == 0.0
    assert restore_ratio(45.0, 80.0, 10.0) == 0.5
    assert restore_ratio(50.0, 50.0, 50.0) is None  # no gap to restore


def test_mcnemar_exact_matches_the_binomial_tail():
    x = [True] * 8 + [False] * 12
    y = [False] * 8 + [False] * 10 + [True] * 2
    out = mcnemar_exact(x, y)
    assert (out["only_first"], out["only_second"]) == (8, 2)
    expected = 2 * sum(math.comb(10, i) for i in range(3)) / 2 ** 10
    assert out["p_value"] == pytest.approx(expected, abs=1e-6)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([True], [True, False])


def test_mcnemar_pooled_from_discordant_counts_equals_the_test_on_the_joined_sets():
    sets = [([True] * 3 + [False] * 5, [False] * 3 + [True] + [False] * 4),
            ([True] * 4 + [False] * 6, [False] * 4 + [False] * 6)]
    tests = [mcnemar_exact(x, y) for x, y in sets]
    pooled = mcnemar_from_discordant(sum(t["only_first"] for t in tests), sum(t["only_second"] for t in tests))
    joined = mcnemar_exact(sets[0][0] + sets[1][0], sets[0][1] + sets[1][1])
    assert pooled == joined
    assert (pooled["only_first"], pooled["only_second"]) == (7, 1)
    assert pooled["p_value"] < min(t["p_value"] for t in tests)  # pooling the sets' evidence sharpens the test
    assert mcnemar_from_discordant(0, 0)["p_value"] == 1.0


def _scored(path, flags, intervention="none", degenerate=None, label="harmful"):
    n = len(flags)
    degenerate = degenerate or [False] * n
    verdicts = ["degenerate" if d else "complied" if f else "refused" for f, d in zip(flags, degenerate)]
    write_table(pa.table({"id": [f"r{i}" for i in range(n)], "prompt": ["p"] * n, "response": ["x"] * n,
                          "variant": ["v"] * n, "intervention": [intervention] * n, "label": [label] * n,
                          "category": ["c"] * n, "refused": [v == "refused" for v in verdicts], "harmful": flags,
                          "judge_score": [float(f) for f in flags], "verdict": verdicts, "degenerate": degenerate,
                          "judge": ["refusal_matcher"] * n}), path)
    return str(path)


def test_restore_section_pairs_prompts_and_reports_both_selections(tmp_path):
    u = [True] * 10
    a = [False] * 10
    _scored(tmp_path / "u_ds.parquet", u)
    _scored(tmp_path / "a_ds.parquet", a)
    safety = _scored(tmp_path / "s.parquet", [False] * 9 + [True], "guided:safety:k=30:two_model")
    rand = _scored(tmp_path / "r.parquet", [True] * 8 + [False] * 2, "guided:random:k=30:two_model",
                   degenerate=[False] * 9 + [True])
    section = restore_section(str(tmp_path / "u_{dataset}.parquet"), str(tmp_path / "a_{dataset}.parquet"),
                              {"ds": {"safety": {"0.05": safety}, "random": {"0.05": rand}}})
    (point,) = section["points"]
    assert point["neurons"] == 30 and point["n"] == 10 and point["judge"] == "refusal_matcher"
    assert point["restore_safety"] == 0.9 and point["restore_random"] == 0.2
    assert point["safety_vs_random"]["only_second"] == 8
    assert point["safety_vs_random"]["significant"] is True  # 8 vs 1 discordant pairs: p = 0.039
    assert point["vs_unaligned_random"]["significant"] is False  # 0 vs 2: p = 0.5
    assert (point["degenerate_random"], point["degenerate_safety"], point["degenerate_unaligned"]) == (10.0, 0.0, 0.0)


def test_a_difference_is_significant_only_below_alpha():
    assert mcnemar_exact([True] * 6, [False] * 6)["significant"] is True  # p = 0.03125
    assert mcnemar_exact([True] * 5, [False] * 5)["significant"] is False  # p = 0.0625


def test_answer_perplexity_scores_only_the_answer_after_the_chat_prompt(tiny_base):
    from neuronkit.perplexity import answer_perplexities
    from neuronkit.models import chat_prompt

    model, tok = load_variant(tiny_base)
    prompts, answers = ["Tell me a joke", "Explain rain"], ["Here is one.", "Water falls from clouds when cold."]
    got = answer_perplexities(model, tok, prompts, answers, batch_size=2)
    for prompt, answer, value in zip(prompts, answers, got):
        ctx = tok(chat_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
        ans = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + ans])
        labels = ids.clone()
        labels[0, :len(ctx)] = -100
        with torch.no_grad():
            loss = float(model(ids, labels=labels).loss)
        assert value == pytest.approx(math.exp(loss), rel=1e-4)
    assert math.isnan(answer_perplexities(model, tok, ["x"], [""])[0])


def test_perplexity_matches_the_mean_token_loss(tiny_base):
    model, tok = load_variant(tiny_base)
    texts = ["hello there", "a longer piece of text here"]
    out = perplexity(model, tok, texts, batch_size=1)
    losses, count = 0.0, 0
    for t in texts:
        ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"]])
        loss = model(ids, labels=ids).loss
        losses += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    assert out["tokens"] == count
    assert out["perplexity"] == pytest.approx(math.exp(losses / count), rel=1e-4)
    assert perplexity(model, tok, texts, batch_size=2)["perplexity"] == pytest.approx(out["perplexity"], rel=1e-4)


def test_logistic_probe_separates_a_separable_problem_and_is_deterministic():
    torch.manual_seed(0)
    x = torch.randn(200, 5, dtype=torch.float64)
    y = (x[:, 2] * 3 + 0.1 * x[:, 0] > 0)
    m1, m2 = fit_logistic(x[:150], y[:150]), fit_logistic(x[:150], y[:150])
    assert (m1[-1].coef_ == m2[-1].coef_).all() and torch.equal(predict(m1, x), predict(m2, x))
    metrics = classification_metrics(predict(m1, x[150:]), y[150:])
    assert metrics["accuracy"] >= 0.95 and metrics["f1"] >= 0.95
    noise = classification_metrics(predict(fit_logistic(torch.randn(150, 5, dtype=torch.float64), y[:150]), x[150:]), y[150:])
    assert noise["accuracy"] < metrics["accuracy"]


def test_logistic_probe_matches_the_stated_objective():
    """C = 1 / l2 on standardised features: the fitted weights are a stationary point of the documented loss."""
    torch.manual_seed(1)
    x = torch.randn(120, 4, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0], dtype=torch.float64)
    y = (x[:, 0] + x[:, 1] / 10 + torch.randn(120, dtype=torch.float64) > 0)
    probe = fit_logistic(x, y, l2=2.0)
    scaler, logit = probe
    z = torch.from_numpy(scaler.transform(x.numpy()))
    w = torch.tensor(logit.coef_[0], requires_grad=True)
    b = torch.tensor(logit.intercept_[0], requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.double()) + 2.0 * (w @ w) / (2 * len(y))
    loss.backward()
    assert w.grad.abs().max() < 1e-5 and b.grad.abs() < 1e-5


def test_a_one_class_training_set_gets_the_constant_probe():
    x = torch.randn(10, 3, dtype=torch.float64)
    assert predict(fit_logistic(x, torch.zeros(10, dtype=torch.bool)), x).tolist() == [False] * 10


def test_majority_baseline_and_unsafe_labels():
    y_train = torch.tensor([True, True, False])
    y_test = torch.tensor([True, False, False, False])
    out = {t: classification_metrics(pred, y_test) for t, pred in majority_predictions(y_train, {"t": y_test}).items()}
    assert out["t"]["accuracy"] == 0.25
    table = pa.table({"harmful": [True, True, False], "label": ["harmful", "benign", "harmful"]})
    assert unsafe_labels(table).tolist() == [True, False, False]  # benign prompts are never 'unsafe'


def test_neuron2word_reads_the_down_proj_column_through_the_unembedding(tiny_base):
    model, tok = load_variant(tiny_base)
    out = neuron_tokens(model, tok, layer=1, neuron=3, top=4)
    column = model.model.layers[1].mlp.down_proj.weight[:, 3]
    logits = model.lm_head(model.model.norm(column.unsqueeze(0)))[0]
    assert out["promotes"][0] == tok.decode([int(logits.argmax())])
    assert out["suppresses"][0] == tok.decode([int(logits.argmin())])
    shape = model_shape(model.config)
    idx = NeuronIndex.from_scores({"mlp": torch.rand(2, shape["sites"]["mlp"])}, {"shape": shape})
    words = neuron2word(model, tok, idx, n=3, top=2)
    assert [w["rank"] for w in words] == [0, 1, 2] and words[0]["neuron"] == int(idx.neuron[0])


def test_last_prompt_features_are_the_index_neurons_at_the_last_prompt_token(tiny_base):
    from neuronkit.hooks import capture
    from neuronkit.models import chat_prompt
    from neuronkit.safeguard import last_prompt_features

    model, tok = load_variant(tiny_base)
    shape = model_shape(model.config)
    idx = NeuronIndex.from_scores({"mlp": torch.rand(2, shape["sites"]["mlp"])}, {"shape": shape}).top(7)
    prompts = ["short one", "a somewhat longer prompt here"]
    feats = last_prompt_features(model, tok, prompts, idx, batch_size=2)
    assert feats.shape == (2, 7)
    for row, prompt in enumerate(prompts):  # unbatched, no padding: the last position is the last prompt token
        ids = tok(chat_prompt(tok, prompt), return_tensors="pt", add_special_tokens=False)
        with capture(model, [(0, "mlp"), (1, "mlp")]) as store:
            model(**ids)
        expected = [store[(l, "mlp")][0, -1, n] for l, n in zip(idx.layer.tolist(), idx.neuron.tolist())]
        assert torch.allclose(feats[row].float(), torch.stack(expected), atol=1e-5)


def test_restore_points_carry_the_perplexity_at_their_own_k(tmp_path):
    _scored(tmp_path / "u_ds.parquet", [True] * 4)
    _scored(tmp_path / "a_ds.parquet", [False] * 4)
    nested = {"ds": {s: {k: _scored(tmp_path / f"{s}{k}.parquet", [True, False, False, True], f"guided:{s}:k=3")
                         for k in ("0.1", "0.5")} for s in ("safety", "random")}}
    patched = {("safety", "0.1"): 12.0, ("random", "0.1"): 13.0, ("safety", "0.5"): 14.0, ("random", "0.5"): 15.0}
    ppl = {"text": "prompt text", "unaligned": {"perplexity": 10.0}, "aligned": {"perplexity": 11.0},
           **{f"{s}_k{k}": {"perplexity": v} for (s, k), v in patched.items()}}
    section = restore_section(str(tmp_path / "u_{dataset}.parquet"), str(tmp_path / "a_{dataset}.parquet"), nested,
                              ppl)
    got = {p["k"]: (p["perplexity_safety"], p["perplexity_random"], p["perplexity_unaligned"], p["perplexity_aligned"])
           for p in section["points"]}
    assert got == {"0.1": (12.0, 13.0, 10.0, 11.0), "0.5": (14.0, 15.0, 10.0, 11.0)}
    plain = restore_section(str(tmp_path / "u_{dataset}.parquet"), str(tmp_path / "a_{dataset}.parquet"), nested)
    assert not any(k.startswith(("perplexity", "change_share")) for p in plain["points"] for k in p)
    shares = {"0.1": {"safety": 0.4, "random": 0.1}, "0.5": {"safety": 0.9, "random": 0.5}}
    shared = restore_section(str(tmp_path / "u_{dataset}.parquet"), str(tmp_path / "a_{dataset}.parquet"), nested,
                             change_shares=shares)
    assert {p["k"]: (p["change_share_safety"], p["change_share_random"]) for p in shared["points"]} == {
        "0.1": (0.4, 0.1), "0.5": (0.9, 0.5)}


def test_variant_perplexity_file_is_the_perplexity_of_the_loaded_checkpoint(tiny_base, tmp_path):
    import json

    from neuronkit.evaluate import evaluation_section
    from neuronkit.perplexity import variant_perplexity_file

    texts = ["How do I bake bread?", "Explain rain to a child."]
    write_table(pa.table({"id": ["b0", "b1"], "prompt": texts, "label": ["benign"] * 2, "category": ["c"] * 2}),
                tmp_path / "benign_test.parquet")
    out = variant_perplexity_file(tiny_base, tmp_path / "benign_test.parquet", tmp_path / "ppl" / "base.json",
                                  variant="base", dataset="benign_test")
    model, tok = load_variant(tiny_base)
    assert out == {"variant": "base", "dataset": "benign_test", "text": "prompt text", **perplexity(model, tok, texts)}
    assert json.loads((tmp_path / "ppl" / "base.json").read_text()) == out
    scored = _scored(tmp_path / "harmful_test.parquet", [True, False, True, False], degenerate=[False] * 3 + [True])
    section = evaluation_section([scored], {"harmful_test": "harmful"}, [str(tmp_path / "ppl" / "base.json")])
    card = section["summary"]["v"]
    assert card["harmful_score"] == {"harmful_test": 50.0} and card["degenerate_rate"] == {"harmful_test": 25.0}
    assert section["summary"]["base"]["perplexity"] == out["perplexity"] and section["perplexity"]["base"] == out


def test_nlsr_paired_tests_compare_nlsr_with_attacked_and_the_random_control(tmp_path):
    from neuronkit.evaluate import nlsr_paired_tests

    def at(variant, flags):
        (tmp_path / variant).mkdir(exist_ok=True)
        return _scored(tmp_path / variant / "harmful_test.parquet", flags)

    paths = [at("attacked_p0.1", [True] * 12 + [False] * 8), at("nlsr_p0.1", [False] * 20),
             at("nlsr_random_p0.1", [True] * 10 + [False] * 10), at("attacked_p0.0", [True] * 2 + [False] * 18),
             at("nlsr_p0.0", [False] * 20), at("aligned", [False] * 20)]
    tests = {(t["first"], t["second"]): t for t in nlsr_paired_tests(paths)}
    assert set(tests) == {("nlsr_p0.1", "attacked_p0.1"), ("nlsr_p0.1", "nlsr_random_p0.1"),
                          ("nlsr_p0.0", "attacked_p0.0")}
    vs_random = tests[("nlsr_p0.1", "nlsr_random_p0.1")]
    assert (vs_random["only_first"], vs_random["only_second"], vs_random["n"]) == (0, 10, 20)
    assert vs_random["significant"] and vs_random["second_percent"] == 50.0 and vs_random["flag"] == "harmful"
    assert not tests[("nlsr_p0.0", "attacked_p0.0")]["significant"]  # 2 discordant prompts: p = 0.5
    _scored(tmp_path / "nlsr_random_p0.1" / "harmful_test.parquet", [True] * 19)
    with pytest.raises(ValueError, match="different prompts"):
        nlsr_paired_tests(paths)


def test_deactivation_paired_tests_compare_the_safety_neurons_with_each_control(tmp_path):
    from neuronkit.evaluate import deactivation_paired_tests

    def at(variant, flags):
        (tmp_path / variant).mkdir(exist_ok=True)
        return _scored(tmp_path / variant / "harmful_test.parquet", flags)

    paths = [at("aligned", [False] * 20), at("deact_safety", [True] * 14 + [False] * 6),
             at("deact_random", [True] * 1 + [False] * 19), at("deact_magnitude", [True] * 12 + [False] * 8)]
    tests = {t["second"]: t for t in deactivation_paired_tests(paths)}
    assert set(tests) == {"deact_random", "deact_magnitude"}
    assert (tests["deact_random"]["only_first"], tests["deact_random"]["only_second"]) == (13, 0)
    assert tests["deact_random"]["significant"] and tests["deact_random"]["flag"] == "harmful"
    # the magnitude-matched control breaks safety nearly as much: 2 discordant prompts, not significant
    assert not tests["deact_magnitude"]["significant"] and tests["deact_magnitude"]["second_percent"] == 60.0
    _scored(tmp_path / "deact_magnitude" / "harmful_test.parquet", [True] * 19)
    with pytest.raises(ValueError, match="different prompts"):
        deactivation_paired_tests(paths)


def _benign(path, refused, intervention="none"):
    """A scored benign set: ``refused`` answers are over-refusals (the rest complied, as they should)."""
    return _scored(path, [not r for r in refused], intervention, label="benign")


def test_a_benign_patching_set_reports_the_over_refusal_the_patch_brings_not_r(tmp_path):
    """The alignment tax under patching: on benign prompts the point is the over-refusal and its share of A's."""
    from neuronkit.report import plot_restore_curve

    _benign(tmp_path / "u_ok.parquet", [True] + [False] * 9)       # U refuses 10%
    _benign(tmp_path / "a_ok.parquet", [True] * 5 + [False] * 5)   # A refuses 50%
    _scored(tmp_path / "u_bad.parquet", [True] * 10)
    _scored(tmp_path / "a_bad.parquet", [False] * 10)
    nested = {"ok": {"safety": {"0.1": _benign(tmp_path / "s.parquet", [True] * 3 + [False] * 7, "guided:safety:k=3")},
                     "random": {"0.1": _benign(tmp_path / "r.parquet", [True] + [False] * 9, "guided:random:k=3")}},
              "bad": {s: {"0.1": _scored(tmp_path / f"{s}b.parquet", [False] * 10, f"guided:{s}:k=3")}
                      for s in ("safety", "random")}}
    section = restore_section(str(tmp_path / "u_{dataset}.parquet"), str(tmp_path / "a_{dataset}.parquet"), nested)
    benign, harmful = (next(p for p in section["points"] if p["dataset"] == d) for d in ("ok", "bad"))
    assert benign["metric"] == "over_refusal" and harmful["metric"] == "harmful_score"
    assert (benign["over_refusal_unaligned"], benign["over_refusal_aligned"]) == (10.0, 50.0)
    assert (benign["over_refusal_safety"], benign["over_refusal_random"]) == (30.0, 10.0)
    assert benign["tax_safety"] == 0.5 and benign["tax_random"] == 0.0
    assert not any(k.startswith(("restore", "harmful_")) for k in benign)
    assert harmful["restore_safety"] == 1.0 and "tax_safety" not in harmful
    plot_restore_curve(section, tmp_path / "curve.png")  # benign points carry no R and are left off the plot
    assert (tmp_path / "curve.png").stat().st_size > 1000
    for who in ("u", "a"):  # a set whose rows disagree on their label has no one metric
        rows = pa.table({"id": ["r0", "r1"], "prompt": ["p"] * 2, "response": ["x"] * 2, "variant": ["v"] * 2,
                         "intervention": ["none"] * 2, "label": ["harmful", "benign"], "category": ["c"] * 2,
                         "refused": [False] * 2, "harmful": [True] * 2, "judge_score": [1.0] * 2,
                         "verdict": ["complied"] * 2, "degenerate": [False] * 2, "judge": ["refusal_matcher"] * 2})
        write_table(rows, tmp_path / f"{who}_mixed.parquet")
    with pytest.raises(ValueError, match="patching dataset mixed: rows must be all harmful or all benign"):
        restore_section(str(tmp_path / "u_{dataset}.parquet"), str(tmp_path / "a_{dataset}.parquet"),
                        {"mixed": nested["bad"]})


def test_degenerate_answers_label_nothing_and_an_all_degenerate_set_is_named():
    table = pa.table({"prompt": ["a", "b", "c", "d"], "harmful": [True, False, False, True],
                      "label": ["harmful"] * 4, "degenerate": [False, True, None, False]})
    prompts, labels, dropped = labelled_prompts([table], "x.parquet")
    assert prompts == ["a", "c", "d"] and labels.tolist() == [True, False, True] and dropped == 1
    prompts, labels, dropped = labelled_prompts([table], "x.parquet", drop_degenerate=False)
    assert len(prompts) == 4 and dropped == 0 and labels.tolist() == [True, False, False, True]
    broken = table.filter(pa.array([False, True, False, False]))
    with pytest.raises(ValueError, match="every answer in broken.parquet is degenerate"):
        labelled_prompts([broken], "broken.parquet")


def test_probe_accuracy_carries_its_interval_and_selections_are_compared_on_the_same_prompts():
    y = torch.tensor([True] * 8 + [False] * 2)
    metrics = classification_metrics(y.clone(), y)
    assert metrics["accuracy"] == 1.0 and metrics["ci95"][0] < 1.0 and metrics["ci95"][1] == 1.0
    calls = {"safety": {"t": y.clone()}, "random": {"t": ~y}, "majority": majority_predictions(y, {"t": y})}
    paired = paired_accuracy_tests(calls, {"t": y})
    assert set(paired) == {"safety_vs_random", "safety_vs_majority"}
    assert (paired["safety_vs_random"]["t"]["only_first"], paired["safety_vs_random"]["t"]["only_second"]) == (10, 0)
    assert (paired["safety_vs_majority"]["t"]["only_first"], paired["safety_vs_majority"]["t"]["only_second"]) == (2, 0)
