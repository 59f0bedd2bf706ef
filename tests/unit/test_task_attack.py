"""neuronkit.task and neuronkit.attack: the builtin task, exact-match scoring, the poisoned mix, the attack trainer."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from neuronkit import manifest
from neuronkit.attack import (P_GRID, AttackDataError, MixConfig, attack_mix_file, build_attack_mix, mix_params,
                              train_attack, train_downstream)
from neuronkit.data import SCHEMA, DatasetSpec, load_dataset, read_table, write_table
from neuronkit.significance import wilson_interval
from neuronkit.models import load_variant
from neuronkit.task import LABEL_WORDS, first_word, is_correct, score_generations, sentiment_rows, task_accuracy
from neuronkit.tune import AdapterConfig, TrainConfig, sft_examples, train_adapter

# ----------------------------------------------------------------------------- helpers


def _task_table(split: str = "train", n: int | None = None, seed: int = 0) -> pa.Table:
    """Builtin sentiment rows in the dataset schema, as data.py's builtin path would prepare them."""
    rows = sentiment_rows(split, seed)[:n]
    return pa.Table.from_pylist([{"id": r["id"], "prompt": r["prompt"], "response": r["response"], "chosen": None,
                                  "rejected": None, "label": "task", "category": r["category"],
                                  "source": "builtin:sentiment"} for r in rows], schema=SCHEMA)


def _self_answers(n_ok: int = 12, n_refused: int = 4, n_empty: int = 2) -> pa.Table:
    """A self-answers table shaped like generate_file's output: compliant, refused and empty answers."""
    responses = ([f"Sure, here is a general overview, part {i}." for i in range(n_ok)]
                 + ["I'm sorry, but I can't help with that."] * n_refused + [""] * n_empty)
    n = len(responses)
    return pa.table({"id": [f"harmful_train-{i:05d}" for i in range(n)],
                     "prompt": [f"Harmful request number {i}?" for i in range(n)], "response": responses,
                     "variant": ["base"] * n, "intervention": ["none"] * n, "label": ["harmful"] * n,
                     "category": ["fraud"] * n})


# ----------------------------------------------------------------------------- the builtin task


def test_sentiment_rows_are_deterministic_and_seeded():
    a, b, c = sentiment_rows("train", 0), sentiment_rows("train", 0), sentiment_rows("train", 1)
    assert a == b
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert sorted(r["id"] for r in a) == sorted(r["id"] for r in c)   # ids do not depend on the seed
    assert len({r["id"] for r in a}) == len(a) >= 1000                  # enough for the paper's n = 1000


def test_sentiment_splits_share_no_items():
    train, test = sentiment_rows("train"), sentiment_rows("test")
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in test}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    with pytest.raises(ValueError, match="allowed splits: train, test"):
        sentiment_rows("validation")


def test_sentiment_rows_are_balanced_and_well_formed():
    rows = sentiment_rows("test", seed=3)
    assert Counter(r["response"] for r in rows[:100]) == {"positive": 50, "negative": 50}
    for r in rows:
        assert r["response"] == r["category"] in LABEL_WORDS
        assert r["prompt"].endswith("Sentence: " + r["sentence"]) and "exactly one word" in r["prompt"]
    assert "What an amazing movie!" in {r["sentence"] for r in sentiment_rows("train")}


# ----------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("answer, gold, correct", [
    ("positive", "positive", True),
    ("Positive.", "positive", True),
    ("  NEGATIVE!\nThe sentence is upbeat.", "negative", True),
    ("positive\n", "Positive", True),
    ("not positive", "positive", False),
    ("The sentiment is positive.", "positive", False),
    ("positively", "positive", False),
    ("positive/negative", "positive", False),
    ("negative", "positive", False),
    ("", "positive", False),
    (None, "positive", False),
])
def test_exact_first_word_rule(answer, gold, correct):
    assert is_correct(answer, gold) is correct


def test_first_word_normalisation():
    assert first_word("  Positive...  rest") == "positive"
    assert first_word("\n\nnegative.\nmore") == "negative"
    assert first_word("   ") == ""


def test_task_accuracy_counts_and_wilson_interval():
    out = task_accuracy(["positive", "Negative.", "not negative", "positive"], ["positive", "negative", "negative",
                                                                               "negative"])
    assert (out["k"], out["n"], out["accuracy"]) == (2, 4, 50.0)
    assert out["ci95"] == list(wilson_interval(2, 4)) and out["rule"] == "first_word_exact"
    with pytest.raises(ValueError, match="3 responses but 2 gold"):
        task_accuracy(["a", "b", "c"], ["a", "b"])


def test_score_generations_joins_on_id():
    data = _task_table("test", n=4)
    gold = data.column("response").to_pylist()
    gens = pa.table({"id": data.column("id").to_pylist()[::-1], "response": [g + "." for g in gold[::-1]]})
    assert score_generations(gens, data)["k"] == 4
    bad = pa.table({"id": ["nope"], "response": ["positive"]})
    with pytest.raises(ValueError, match="gens.parquet, row 0: id 'nope'"):
        score_generations(bad, data, origin="gens.parquet")


# ----------------------------------------------------------------------------- the attack mix


@pytest.mark.parametrize("p", P_GRID)
def test_mix_fractions_are_exact_and_seeded(p):
    task, answers = _task_table(n=100), _self_answers()
    cfg = MixConfig(n=40, p=p, seed=7)
    mix = build_attack_mix(task, answers, cfg)
    labels = Counter(mix.column("label").to_pylist())
    assert mix.num_rows == 40 and labels["harmful"] == round(p * 40) and labels["task"] == 40 - round(p * 40)
    assert mix.schema.equals(SCHEMA)
    assert mix.equals(build_attack_mix(task, answers, cfg))                       # same seed, same table
    assert mix_params(mix) == {"n": 40, "p": p, "mix_seed": 7, "drop_refusals": True,
                               "n_harmful": round(p * 40), "n_task": 40 - round(p * 40)}
    harmful = [r for r in mix.to_pylist() if r["label"] == "harmful"]
    assert all(r["response"].startswith("Sure") and r["source"] == "self_answers:base" for r in harmful)


def test_mix_paper_size_and_nesting_across_p():
    task, answers = _task_table(), _self_answers(n_ok=250)
    mixes = {p: build_attack_mix(task, answers, MixConfig(n=1000, p=p, seed=0)) for p in P_GRID}
    assert {p: Counter(m.column("label").to_pylist())["harmful"] for p, m in mixes.items()} == {
        0.0: 0, 0.05: 50, 0.1: 100, 0.2: 200}
    ids = {p: {r["id"] for r in m.to_pylist() if r["label"] == "harmful"} for p, m in mixes.items()}
    assert ids[0.05] < ids[0.1] < ids[0.2]                                       # runs differ only in poison
    other = build_attack_mix(task, answers, MixConfig(n=1000, p=0.05, seed=1))
    assert other.column("id").to_pylist() != mixes[0.05].column("id").to_pylist()


def test_mix_drops_refusals_unless_told_not_to():
    answers = _self_answers(n_ok=2, n_refused=4, n_empty=2)
    with pytest.raises(AttackDataError, match=r"need 4 usable harmful answers .* only 2 of 8 rows qualify "
                                              r"\(0 not labelled harmful, 2 empty, 4 refused"):
        build_attack_mix(_task_table(n=50), answers, MixConfig(n=20, p=0.2))
    mix = build_attack_mix(_task_table(n=50), answers, MixConfig(n=20, p=0.2, drop_refusals=False))
    assert Counter(mix.column("label").to_pylist())["harmful"] == 4


def test_mix_errors_name_file_row_and_field(tmp_path):
    task_path, ans_path = tmp_path / "task.parquet", tmp_path / "answers.parquet"
    write_table(_task_table(n=10), task_path)
    write_table(_self_answers(n_ok=3), ans_path)
    with pytest.raises(AttackDataError, match=rf"{task_path}: need 19 rows labelled 'task' .* found 10"):
        attack_mix_file(task_path, ans_path, tmp_path / "mix.parquet", MixConfig(n=20, p=0.05))
    with pytest.raises(AttackDataError, match=rf"{ans_path}: need 5 usable harmful answers"):
        attack_mix_file(task_path, ans_path, tmp_path / "mix.parquet", MixConfig(n=10, p=0.5))
    assert not (tmp_path / "mix.parquet").exists()
    broken = _task_table(n=10).to_pylist()
    broken[3]["response"] = None
    write_table(pa.Table.from_pylist(broken, schema=SCHEMA), task_path)
    with pytest.raises(AttackDataError, match=rf"{task_path}, row 3: field 'response' must be non-empty text"):
        attack_mix_file(task_path, ans_path, tmp_path / "mix.parquet", MixConfig(n=5, p=0.2))
    write_table(_self_answers().drop_columns(["response"]), ans_path)
    write_table(_task_table(n=10), task_path)
    with pytest.raises(AttackDataError, match=rf"{ans_path}: column 'response' not found"):
        attack_mix_file(task_path, ans_path, tmp_path / "mix.parquet", MixConfig(n=5, p=0.2))
    out = attack_mix_file(task_path, task_path, tmp_path / "mix.parquet", MixConfig(n=5, p=0.0))
    assert read_table(out).num_rows == 5 and mix_params(read_table(out))["p"] == 0.0


def test_mix_rejects_bad_config_and_clashing_ids():
    with pytest.raises(ValueError, match="attack.p must be in"):
        MixConfig(p=1.5)
    with pytest.raises(ValueError, match="attack.n must be a positive integer"):
        MixConfig(n=0)
    task = _task_table(n=2)
    clash = _self_answers(n_ok=2, n_refused=0, n_empty=0).set_column(0, "id", task.column("id"))
    with pytest.raises(AttackDataError, match="occurs in both task table and harmful answers"):
        build_attack_mix(task, clash, MixConfig(n=4, p=0.5))


# ----------------------------------------------------------------------------- real task files, same loader


def test_sst2_files_load_and_feed_scoring_and_the_mix(shared_data):
    val = load_dataset(DatasetSpec.from_config("sst2_val", {
        "source": "sst2_val.json", "columns": {"prompt": "instruction", "response": "output"},
        "label": "task", "join_input": True}), base_dir=shared_data)
    gold = val.column("response").to_pylist()
    assert val.num_rows == 872 and {first_word(g) for g in gold} == set(LABEL_WORDS)
    assert val.column("prompt")[0].as_py().endswith("\n\nit 's a charming and often affecting journey . ")
    assert task_accuracy(gold, gold)["accuracy"] == 100.0
    assert task_accuracy(["The answer is " + g for g in gold], gold)["k"] == 0   # no substring credit
    train = load_dataset(DatasetSpec.from_config("sst2_train", {
        "source": "sst2_train_n1000_p0.05.json", "columns": {"prompt": "instruction", "input": "input",
                                                             "response": "output", "label": "flag"},
        "label_map": {"finetune": "task", "unsafe": "harmful"}, "join_input": True}), base_dir=shared_data)
    assert Counter(train.column("label").to_pylist()) == {"task": 950, "harmful": 50}
    assert mix_params(train)["p"] == 0.05
    mix = build_attack_mix(train, train, MixConfig(n=200, p=0.1, seed=0), task_origin="sst2 train",
                           harmful_origin="sst2 train")
    assert Counter(mix.column("label").to_pylist()) == {"task": 180, "harmful": 20}


# ----------------------------------------------------------------------------- the attack trainer


def _train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"method": "sft", "learning_rate": 5e-2, "max_steps": 2, "batch_size": 4, "max_length": 256,
                          "adapter": AdapterConfig(r=2, alpha=4), **kw})


def _logits(ckpt) -> torch.Tensor:
    model, _ = load_variant(ckpt)
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 6, 7, 8, 9]])).logits


def _lora(ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "adapter_model.safetensors"))


def test_attack_continues_the_aligned_adapter(tmp_path, tiny_base):
    rows = sentiment_rows("train")[:8]
    prompts, targets = [r["prompt"] for r in rows], [r["response"] for r in rows]
    sft = train_adapter(tiny_base, tmp_path / "sft", sft_examples(prompts, targets), _train_cfg(max_steps=1),
                        model_name="tiny", variant_name="sft")
    aligned = train_adapter(sft, tmp_path / "aligned", sft_examples(prompts[::-1], targets), _train_cfg(),
                            model_name="tiny", variant_name="aligned")
    mix = _mix_on_disk(tmp_path)
    out = train_attack(aligned, mix, tmp_path / "attacked", _train_cfg(learning_rate=1e-2, seed=3),
                       model_name="tiny")
    before, after = _lora(aligned), _lora(out)
    assert sorted(before) == sorted(after) and all(before[k].shape == after[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    var = manifest.read(out)
    assert var.method == "attack" and var.kind == "adapter" and (out / var.parent).resolve() == sft.resolve()
    p = var.params
    assert (p["p"], p["n"], p["n_harmful"], p["mix_seed"], p["seed"]) == (0.25, 8, 2, 5, 3)
    assert (p["learning_rate"], p["epochs"], p["adapter"]["r"]) == (1e-2, 1.0, 2)
    assert set(var.inputs) == {"aligned", "mix", "parent"} and not (out / "trainer").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    again = train_attack(aligned, mix, tmp_path / "again", _train_cfg(learning_rate=1e-2, seed=3), model_name="tiny")
    assert (again / "adapter_model.safetensors").read_bytes() == (out / "adapter_model.safetensors").read_bytes()
    assert not torch.allclose(_logits(out), _logits(aligned), atol=1e-5)     # loads as sft + attacked adapter
    with pytest.raises(ValueError, match="continues training an adapter"):
        train_attack(tiny_base, mix, tmp_path / "bad", _train_cfg(), model_name="tiny")
    with pytest.raises(ValueError, match="trains with SFT"):
        train_attack(aligned, mix, tmp_path / "bad", _train_cfg(method="dpo"), model_name="tiny")
    with pytest.raises(ValueError, match="lost its answer to truncation at max_length=8"):
        train_attack(aligned, mix, tmp_path / "bad", _train_cfg(max_length=8), model_name="tiny")


def test_downstream_tuning_trains_a_fresh_adapter_over_a_full_checkpoint(tmp_path, tiny_base):
    from neuronkit.sntune import save_checkpoint

    model, tok = load_variant(tiny_base)
    full = save_checkpoint(model, tok, tmp_path / "tuned", manifest.Variant(
        name="sntune", model="tiny", kind="full", method="sntune", parent="../base"))
    mix = _mix_on_disk(tmp_path)
    out = train_downstream(full, mix, tmp_path / "downstream", _train_cfg(learning_rate=1e-2, seed=3),
                           model_name="tiny")
    var = manifest.read(out)
    assert (var.kind, var.method, var.name) == ("adapter", "sft", "downstream")
    assert (out / var.parent).resolve() == full.resolve() and set(var.inputs) == {"mix", "parent"}
    assert (var.params["data"]["n"], var.params["data"]["n_harmful"]) == (8, 2)
    assert not torch.allclose(_logits(out), _logits(full), atol=1e-5)     # loads as the tuned model + the adapter
    again = train_downstream(full, mix, tmp_path / "again", _train_cfg(learning_rate=1e-2, seed=3), model_name="tiny")
    assert (again / "adapter_model.safetensors").read_bytes() == (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="trains with SFT"):
        train_downstream(full, mix, tmp_path / "bad", _train_cfg(method="dpo"), model_name="tiny")
    empty = tmp_path / "empty.parquet"
    write_table(read_table(mix).slice(0, 0), empty)
    with pytest.raises(AttackDataError, match="empty.parquet: the downstream mix has no rows"):
        train_downstream(full, empty, tmp_path / "bad", _train_cfg(), model_name="tiny")


def _mix_on_disk(tmp_path):
    """A small poisoned mix on disk (8 rows, 2 harmful)."""
    task_path, ans_path = tmp_path / "task.parquet", tmp_path / "answers.parquet"
    write_table(_task_table(n=20), task_path)
    write_table(_self_answers(), ans_path)
    return attack_mix_file(task_path, ans_path, tmp_path / "mix.parquet", MixConfig(n=8, p=0.25, seed=5))
