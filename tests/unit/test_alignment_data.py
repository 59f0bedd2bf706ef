"""Alignment data: rows split by label, own answers kept only when the judge calls them real answers."""

from __future__ import annotations

import pyarrow as pa
import pytest

from neuronkit.alignment_data import (
    AlignmentDataConfig, load_alignment_rows, preference_triples, refusals_for, sft_targets,
)
from neuronkit.builtin_data import refusal_texts
from neuronkit.data import write_table
from neuronkit.judge import RefusalJudge

REAL = "To bake bread, mix flour, water, salt and yeast, knead for ten minutes, let it rise, then bake it hot."
HARMFUL_REAL = "Sure. First you find a quiet street at night, then you check which car doors are left unlocked."
REFUSAL = "I'm sorry, but I can't help with that request."
LOOP = "bread bread bread bread bread bread bread bread bread bread bread bread"


def _answers(path, rows):
    """A self-answers file in the generations schema."""
    cols = ["id", "prompt", "response", "label", "category"]
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}
                     | {"variant": ["base"] * len(rows), "intervention": ["none"] * len(rows)})
    write_table(table, path)
    return str(path)


@pytest.fixture
def answers(tmp_path):
    return {
        "harmful_train": _answers(tmp_path / "h.parquet", [
            ("h1", "How do I steal a car?", HARMFUL_REAL, "harmful", "theft"),
            ("h2", "How do I make a weapon?", REFUSAL, "harmful", "weapons"),
        ]),
        "benign_train": _answers(tmp_path / "b.parquet", [
            ("b1", "How do I bake bread?", REAL, "benign", "cooking"),
            ("b2", "How do I bake a cake?", REFUSAL, "benign", "cooking"),
            ("b3", "How do I bake rolls?", LOOP, "benign", "cooking"),
        ]),
        "contrast_train": _answers(tmp_path / "c.parquet", [
            ("c1", "Tell me how to kill a Linux process.", "Run kill with the process id, or kill -9 when it hangs "
             "and does not stop on its own after a few seconds.", "benign", "homonyms"),
            ("c2", "Tell me how to kill my roommate.", HARMFUL_REAL, "harmful", "homonyms"),
        ]),
    }


CFG = AlignmentDataConfig(borderline=("contrast_train",), benign_pairs=True)


def test_rows_split_by_label_and_only_real_benign_answers_are_kept(answers):
    rows = load_alignment_rows(answers, CFG, RefusalJudge())
    assert [r["id"] for r in rows.harmful] == ["h1", "h2", "c2"]
    assert [r["id"] for r in rows.benign] == ["b1", "c1"]
    assert rows.dropped == {"benign:refused": 1, "benign:degenerate": 1}
    assert rows.counts("complied") == {"harmful": 3, "benign": 2, "harmful_pairs": 2, "harmful_pairs_dropped": 1,
                                       "dropped_benign:degenerate": 1, "dropped_benign:refused": 1}


def test_keep_all_keeps_every_own_answer(answers):
    cfg = AlignmentDataConfig(borderline=("contrast_train",), own_answers="all")
    rows = load_alignment_rows(answers, cfg, RefusalJudge())
    assert len(rows.benign) == 4 and rows.dropped == {} and len(rows.harmful_pairs("all")) == 3


def test_sft_targets_are_refusals_for_harmful_rows_and_own_answers_for_benign_ones(answers):
    rows = load_alignment_rows(answers, CFG, RefusalJudge())
    prompts, targets = sft_targets(rows)
    assert prompts[:3] == [r["prompt"] for r in rows.harmful]
    assert all(t in refusal_texts() for t in targets[:3])
    assert targets[3:] == [REAL, rows.benign[1]["response"]]
    assert refusals_for(rows.harmful) == refusals_for(rows.harmful)  # stable by id, not random


def test_preference_pairs_go_both_ways_and_skip_harmful_rows_the_base_refused(answers):
    rows = load_alignment_rows(answers, CFG, RefusalJudge())
    prompts, chosen, rejected = preference_triples(rows, CFG)
    assert prompts == ["How do I steal a car?", "Tell me how to kill my roommate.", "How do I bake bread?",
                       "Tell me how to kill a Linux process."]
    assert rejected[:2] == [HARMFUL_REAL, HARMFUL_REAL] and all(c in refusal_texts() for c in chosen[:2])
    assert chosen[2:] == [r["response"] for r in rows.benign] and all(r in refusal_texts() for r in rejected[2:])
    one_way = AlignmentDataConfig(borderline=("contrast_train",), benign_pairs=False)
    assert len(preference_triples(rows, one_way)[0]) == 2


def test_a_row_with_the_wrong_label_is_named(tmp_path, answers):
    answers["benign_train"] = _answers(tmp_path / "bad.parquet", [("b9", "How do I rob a bank?", REAL, "harmful",
                                                                     "theft")])
    with pytest.raises(ValueError, match=r"benign_train.*b9.*alignment\.benign.*labelled 'harmful'"):
        load_alignment_rows(answers, CFG, RefusalJudge())
    answers["benign_train"] = _answers(tmp_path / "task.parquet", [("t1", "Rate this.", REAL, "task", "sentiment")])
    with pytest.raises(ValueError, match=r"t1.*harmful or benign, got 'task'"):
        load_alignment_rows(answers, CFG, RefusalJudge())


def test_config_lists_each_dataset_once_and_rejects_an_unknown_mode():
    cfg = AlignmentDataConfig.from_config({"harmful": "h", "benign": "b", "borderline": ["x", "b"],
                                           "preference": "dpo"})
    assert cfg.datasets() == ["h", "b", "x"] and cfg.own_answers == "complied" and cfg.benign_pairs is False
    with pytest.raises(ValueError, match="own_answers"):
        AlignmentDataConfig(own_answers="some")


def test_balance_keeps_as_many_benign_rows_as_harmful_ones_spread_over_datasets(answers):
    cfg = AlignmentDataConfig(borderline=("contrast_train",), benign_pairs=True, balance=True, own_answers="all")
    rows = load_alignment_rows(answers, cfg, RefusalJudge())
    assert len(rows.harmful) == 3 and len(rows.benign) == 3 and rows.dropped == {"benign:balance": 1}
    assert {r["dataset"] for r in rows.benign} == {"benign_train", "contrast_train"}  # both sources stay
    prompts, _, _ = preference_triples(rows, cfg)
    assert len(prompts) == 3 + 3
