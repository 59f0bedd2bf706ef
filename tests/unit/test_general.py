"""General ability through lm-evaluation-harness: the vendored MMLU slice as a local task, scored on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from neuronkit.general import (LOCAL_TASKS, ROOT, GeneralAbilityError, GeneralConfig, accuracy_rows,
                               general_ability, general_section)
from neuronkit.models import load_variant

LIMIT = 6


TASKS = ("mmlu_slice", "mmlu_slice_cloze")


@pytest.fixture(scope="module")
def scored(tiny_base):
    return general_ability(tiny_base, GeneralConfig(tasks=TASKS, limit=LIMIT), variant="base")


def slice_rows(n: int) -> list[dict]:
    path = ROOT / LOCAL_TASKS["mmlu_slice"][0]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]


@pytest.mark.parametrize("task", TASKS)
def test_the_slice_is_scored_with_n_interval_and_per_document_results(scored, task):
    row = scored["tasks"][task]
    assert row["n"] == LIMIT == len(row["correct"]) and row["k"] == sum(row["correct"])
    assert row["value"] == round(100 * row["k"] / LIMIT, 2) and row["ci95"][0] <= row["value"] <= row["ci95"][1]
    assert row["metric"] == "accuracy" and row["judge"] == f"lm-eval {task} acc" and row["n_shot"] == 0
    assert scored["variant"] == "base" and scored["lm_eval_version"].startswith("0.4")
    assert ("acc_norm" in row) == (task == "mmlu_slice_cloze")


def by_hand(doc: dict, task: str) -> tuple[str, list[str]]:
    """lm-eval's zero-shot context and continuations for one slice document (its MMLU and MMLU-continuation
    prompts; continuations follow a space)."""
    if task == "mmlu_slice":
        lettered = "\n".join(f"{c}. {t}" for c, t in zip("ABCD", doc["choices"]))
        return doc["question"].strip() + "\n" + lettered + "\nAnswer:", [" " + c for c in "ABCD"]
    subject = doc["subject"].replace("_", " ")
    context = (f"The following are questions (with answers) about {subject}.\n\n"
               f"Question: {doc['question'].strip()}\nAnswer:")
    return context, [" " + c for c in doc["choices"]]


@pytest.mark.parametrize("task", TASKS)
def test_lm_eval_scores_the_choice_with_the_highest_log_likelihood_after_its_prompt(tiny_base, scored, task):
    """What lm-eval calls correct is what we compute by hand: the argmax of each continuation's summed
    log-likelihood after lm-eval's prompt, compared with the answer index."""
    model, tok = load_variant(tiny_base, device=torch.device("cpu"))
    expected = []
    for doc in slice_rows(LIMIT):
        context, continuations = by_hand(doc, task)
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        scores = []
        for continuation in continuations:
            whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
        expected.append(max(range(4), key=scores.__getitem__) == doc["answer"])
    assert scored["tasks"][task]["correct"] == expected


def test_the_same_checkpoint_scores_the_same(tiny_base, scored):
    again = general_ability(tiny_base, GeneralConfig(tasks=TASKS, limit=LIMIT), variant="base")
    assert again["tasks"] == scored["tasks"]


def _sample(doc_id: int, **metrics) -> dict:
    return {"doc_id": doc_id, "doc": {}, "target": "0", **metrics}


def test_groups_pool_their_subtasks_and_generative_tasks_use_one_filter():
    output = {
        "samples": {"sub_b": [_sample(1, acc=1.0), _sample(0, acc=0.0)], "sub_a": [_sample(0, acc=1.0)],
                    "gsm8k": [_sample(0, exact_match=1.0, filter="strict-match"),
                              _sample(0, exact_match=0.0, filter="flexible-extract"),
                              _sample(1, exact_match=0.0, filter="strict-match"),
                              _sample(1, exact_match=1.0, filter="flexible-extract")]},
        "group_subtasks": {"group": ["sub_a", "sub_b"]}, "n-shot": {"group": 5, "gsm8k": 5},
    }
    rows = accuracy_rows(output, ["group", "gsm8k"], "aligned")
    assert rows["group"]["correct"] == [True, False, True] and rows["group"]["n"] == 3 and rows["group"]["k"] == 2
    assert rows["gsm8k"]["correct"] == [False, True] and rows["gsm8k"]["judge"] == "lm-eval gsm8k exact_match " \
                                                                                   "(flexible-extract)"
    with pytest.raises(GeneralAbilityError, match="no samples for task 'arc'"):
        accuracy_rows(output, ["arc"], "aligned")
    with pytest.raises(GeneralAbilityError, match="bleu.*only accuracy tasks"):
        accuracy_rows({"samples": {"t": [_sample(0, bleu=3.0)]}}, ["t"], "aligned")


def _result(variant: str, correct: list[bool]) -> dict:
    k = sum(correct)
    return {"variant": variant, "lm_eval_version": "0.4.13", "config": {}, "local_tasks": {},
            "tasks": {"mmlu_slice": {"variant": variant, "dataset": "mmlu_slice", "value": 100 * k / len(correct),
                                     "k": k, "n": len(correct), "correct": correct}}}


def test_the_section_pairs_every_variant_with_the_first_on_the_same_documents():
    base = _result("base", [True] * 12 + [False] * 8)
    broken = _result("sntune", [False] * 20)
    same = _result("nlsr_p0.1", [True] * 12 + [False] * 8)
    section = general_section([base, broken, same])
    assert [f["variant"] for f in section["figures"]] == ["base", "sntune", "nlsr_p0.1"]
    assert all("correct" not in f for f in section["figures"])
    tests = {t["first"]: t for t in section["paired"]}
    assert tests["sntune"]["only_second"] == 12 and tests["sntune"]["significant"]
    assert tests["nlsr_p0.1"]["p_value"] == 1.0 and not tests["nlsr_p0.1"]["significant"]
    with pytest.raises(GeneralAbilityError, match="not scored on the same documents"):
        general_section([base, _result("sntune", [True] * 5)])


@pytest.mark.parametrize("bad,field", [({"tasks": []}, "general.tasks"), ({"limit": -1}, "general.limit"),
                                       ({"batch_size": 0}, "general.batch_size"),
                                       ({"num_fewshot": 1.5}, "general.num_fewshot")])
def test_bad_settings_name_the_field(bad, field):
    with pytest.raises(GeneralAbilityError, match=field):
        GeneralConfig.from_config(bad)


def test_a_missing_local_task_file_is_named(tmp_path):
    from neuronkit.general import local_task

    with pytest.raises(GeneralAbilityError, match="mmlu_slice.*mmlu_slice.jsonl"):
        local_task("mmlu_slice", tmp_path, root=tmp_path)
