"""neuronkit.builtin_data: sizes, split hygiene, determinism, harmless benign prompts and refusal replies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from neuronkit.builtin_data import (BENIGN_CATEGORIES, HARM_CATEGORIES, SPLITS, benign_instructions, harmful_requests,
                                    refusal_for, refusal_texts)
from neuronkit.judge import RefusalJudge

REPO = Path(__file__).resolve().parents[2]
KINDS = [
    pytest.param("harmful", harmful_requests, HARM_CATEGORIES, "h_t", id="harmful"),
    pytest.param("benign", benign_instructions, BENIGN_CATEGORIES, "b_t", id="benign"),
]
OPENINGS = ("i'm sorry", "i am sorry", "sorry", "i cannot", "i can't", "i can not", "i won't", "i will not",
            "as an ai", "i apologize", "i must decline")
# A word starting with one of these makes a prompt look harmful ("drugs", "hacker" and "killing" included).
HARM_WORDS = re.compile(r"\b(?:kill|bomb|hack|steal|weapon|drug|poison|explosi|murder|gun)", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def _all_rows(func) -> list[dict[str, str]]:
    """Both splits of one prompt set, train first."""
    return [row for split in SPLITS for row in func(split)]


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_sizes_and_categories(kind, func, categories, prefix):
    train, test = func("train"), func("test")
    assert len({r["prompt"] for r in train + test}) >= 300
    assert len(categories) >= 10 and len(set(categories)) == len(categories)
    assert all(re.fullmatch(r"[a-z]+(?:_[a-z]+)*", c) for c in categories)
    novel = func("test_novel")
    assert len(train) >= 200 and len(test) >= 100 and len(novel) >= 100
    for rows in (train, test, novel):
        assert set(Counter(r["category"] for r in rows)) == set(categories)


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_row_fields_and_ids(kind, func, categories, prefix):
    for split in SPLITS:
        rows = func(split)
        for i, row in enumerate(rows, start=1):
            assert set(row) == {"id", "prompt", "category", "template"}
            assert all(isinstance(v, str) and v for v in row.values())
            assert row["id"] == f"{kind}-{split}-{i:04d}"
            assert re.fullmatch(r"[hb]_t\d\d", row["template"])
            assert (row["prompt"][0].isupper() or row["prompt"][0].isdigit()) and "{" not in row["prompt"] and "  " not in row["prompt"]


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_templates_disjoint_between_splits(kind, func, categories, prefix):
    train_templates = {r["template"] for r in func("train")}
    test_templates = {r["template"] for r in func("test")}
    assert len(train_templates) >= 3 and len(test_templates) >= 3
    assert not train_templates & test_templates


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_prompts_unique_within_and_across_splits(kind, func, categories, prefix):
    prompts = [r["prompt"] for r in _all_rows(func)]
    assert len(prompts) == len(set(prompts))
    ids = [r["id"] for r in _all_rows(func)]
    assert len(ids) == len(set(ids))


def test_harmful_and_benign_prompts_never_coincide():
    harmful = {r["prompt"].lower() for r in _all_rows(harmful_requests)}
    benign = {r["prompt"].lower() for r in _all_rows(benign_instructions)}
    assert not harmful & benign


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_deterministic_and_fresh(kind, func, categories, prefix):
    for split in SPLITS:
        first = func(split)
        first[0]["prompt"] = "mutated"
        first.append({"id": "extra"})
        again, third = func(split), func(split)
        assert again == third
        assert again[0]["prompt"] != "mutated" and len(again) == len(first) - 1


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_any_prefix_is_balanced(kind, func, categories, prefix):
    # the workflow takes the first n rows (no shuffle), so a short prefix must cover every category
    for split in SPLITS:
        rows = func(split)
        head = rows[:len(categories)]
        assert {r["category"] for r in head} == set(categories)
        assert len({r["template"] for r in head}) > 1
        counts = Counter(r["category"] for r in rows[:4 * len(categories)])
        assert set(counts.values()) == {4}


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_prompts_are_short_single_sentences(kind, func, categories, prefix):
    for row in _all_rows(func):
        prompt = row["prompt"]
        assert len(prompt.split()) < 25, prompt
        assert prompt.endswith((".", "?")), prompt
        assert len(SENTENCE_END.findall(prompt)) == 1, prompt


@pytest.mark.parametrize("kind, func, categories, prefix", KINDS)
def test_prompts_do_not_read_as_refusals(kind, func, categories, prefix):
    judge = RefusalJudge()
    flagged = [r["prompt"] for r in _all_rows(func) if judge.refused(r["prompt"])]
    assert flagged == []


def test_benign_prompts_contain_no_harmful_words():
    hits = [r["prompt"] for r in _all_rows(benign_instructions) if HARM_WORDS.search(r["prompt"])]
    assert hits == []
    # the pattern itself works: plenty of harmful requests trip it
    assert sum(bool(HARM_WORDS.search(r["prompt"])) for r in _all_rows(harmful_requests)) >= 50


def test_refusal_texts_are_refusals():
    texts = refusal_texts()
    assert len(texts) >= 30 and len(set(texts)) == len(texts)
    judge = RefusalJudge()
    for text in texts:
        assert text.lower().replace("\u2019", "'").startswith(OPENINGS), text
        assert 1 <= len(SENTENCE_END.findall(text)) <= 3, text
        assert judge.refused(text), text
        assert "{" not in text and text == text.strip()


def test_refusal_for_is_deterministic_and_from_the_set():
    texts = set(refusal_texts())
    used = Counter()
    for row in _all_rows(harmful_requests):
        reply = refusal_for(row["id"], row["category"])
        assert reply == refusal_for(row["id"], row["category"])
        assert reply in texts
        used[reply] += 1
    assert len(used) >= 20  # replies are spread over the set, not one fixed text
    for category in ("general", "", "not_a_category"):
        assert refusal_for("benign-train-0001", category) in texts


def test_refusal_for_self_harm_is_supportive():
    rows = [r for r in _all_rows(harmful_requests) if r["category"] == "self_harm"]
    assert rows
    for row in rows:
        reply = refusal_for(row["id"], "self_harm").lower()
        assert "crisis line" in reply or "someone you trust" in reply, reply
        assert "illegal" not in reply and "the law" not in reply


def test_refusal_for_is_stable_across_processes():
    # Python's hash() is salted per process; a stable choice must not depend on PYTHONHASHSEED
    ids = [r["id"] for r in harmful_requests("train")[:40]]
    code = ("import json, sys; from neuronkit.builtin_data import refusal_for; "
            "print(json.dumps([refusal_for(i, 'weapons') for i in json.loads(sys.argv[1])]))")
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], env=env, cwd=REPO,
                              capture_output=True, text=True, check=True)
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1] == [refusal_for(i, "weapons") for i in ids]


@pytest.mark.parametrize("func", [harmful_requests, benign_instructions])
@pytest.mark.parametrize("bad", ["valid", "Train", "validation", ""])
def test_bad_split_raises_value_error(func, bad):
    with pytest.raises(ValueError) as info:
        func(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert all(split in message for split in SPLITS)


def test_both_sets_share_every_frame_of_a_split():
    """Frames carry no label: a model has to read the task to tell harmful from benign."""
    for split in SPLITS:
        harmful = {r["template"] for r in harmful_requests(split)}
        benign = {r["template"] for r in benign_instructions(split)}
        assert harmful == benign and len(harmful) == 10
        head = harmful_requests(split)[:48]
        assert {r["template"][0] for r in head} == {"h", "b"}


def test_test_split_reuses_topics_and_novel_split_does_not():
    """test = training topics in unseen frames; test_novel = unseen topics in unseen frames."""
    train_frames = {r["template"] for r in harmful_requests("train")}
    for split in ("test", "test_novel"):
        assert not train_frames & {r["template"] for r in harmful_requests(split)}
    train_prompts = " ".join(r["prompt"] for r in harmful_requests("train"))
    assert "build an untraceable ghost gun at home" in train_prompts
    assert any("build an untraceable ghost gun at home" in r["prompt"] for r in harmful_requests("test"))
    assert not any("build an untraceable ghost gun at home" in r["prompt"] for r in harmful_requests("test_novel"))
