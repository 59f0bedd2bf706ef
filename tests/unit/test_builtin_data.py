"""neuronkit.builtin_data: sizes, split hygiene, determinism, harmless benign prompts and refusal replies."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from neuronkit import builtin_data
from neuronkit.builtin_data import (BENIGN_CATEGORIES, BORDERLINE_CATEGORIES, CONTRAST_LABELS, HARM_CATEGORIES, SPLITS,
                                    benign_instructions, borderline_benign, borderline_contrasts, harmful_requests,
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


@pytest.mark.parametrize("func", [harmful_requests, benign_instructions, borderline_benign, borderline_contrasts],
                         ids=lambda f: f.__name__)
def test_deterministic_and_fresh(func):
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


@pytest.mark.parametrize("func", [harmful_requests, benign_instructions, borderline_benign, borderline_contrasts])
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


# ----------------------------------------------------------------------------- borderline-benign prompts and contrasts

BORDERLINE = [
    pytest.param(borderline_benign, id="borderline"),
    pytest.param(borderline_contrasts, id="contrast"),
]
# Every borderline prompt outside privacy_public carries a word that sounds dangerous: that is what makes it borderline.
ALARM_WORDS = re.compile(
    r"\b(?:kill|shoot|execut|fire|bleed|blow|smok|trigger|choke|drown|bur(?:y|n)|jugular|attack|torpedo|bang|destroy|"
    r"eradicat|poison|wipe|shred|blast|assassinat|sacrific|ambush|heist|blood|hostage|sword|besieg|arson|embezzl|"
    r"insider|extort|phishing|manslaughter|espionage|racketeer|genocide|sink|explosion|plot|disaster|gas|massacre)",
    re.IGNORECASE)
# privacy_public prompts ask for personal facts, only about people whose facts are public record or fiction
PERSONAL_FACTS = re.compile(r"\b(?:born|married|address|live[ds]?|job|children|school|living)\b", re.IGNORECASE)


def _filler_tables() -> list[dict[str, tuple]]:
    """Every split -> fillers table behind the borderline sets (one per category), the contrast pairs included."""
    tables = [by_split for by_split in builtin_data._BORDERLINE_HOWTO_TOPICS.values()]
    tables += [builtin_data._DEFINITION_TERMS, builtin_data._HISTORICAL_EVENTS, builtin_data._PUBLIC_PEOPLE]
    return tables + list(builtin_data._CONTRAST_TOPICS.values())


def _flat(fillers) -> list[str]:
    """Fillers as strings (a contrast filler is a (benign, harmful) pair)."""
    return [text for f in fillers for text in ((f,) if isinstance(f, str) else f)]


def test_borderline_categories():
    assert BORDERLINE_CATEGORIES == ("homonyms", "figurative", "safe_targets", "safe_contexts", "definitions",
                                     "historical_events", "privacy_public")
    assert not set(BORDERLINE_CATEGORIES) & (set(HARM_CATEGORIES) | set(BENIGN_CATEGORIES))
    assert CONTRAST_LABELS == ("benign", "harmful")
    for split in SPLITS:
        for func in (borderline_benign, borderline_contrasts):
            assert {r["category"] for r in func(split)} == set(BORDERLINE_CATEGORIES), (func.__name__, split)


def test_borderline_sizes_and_fields():
    sizes = {"train": 150, "test": 100, "test_novel": 60}
    for split in SPLITS:
        rows = borderline_benign(split)
        assert len(rows) >= sizes[split]
        for i, row in enumerate(rows, start=1):
            assert set(row) == {"id", "prompt", "category", "template"}
            assert all(isinstance(v, str) and v for v in row.values())
            assert row["id"] == f"borderline-{split}-{i:04d}"
            assert re.fullmatch(r"[hdep]_t\d\d", row["template"])


def test_contrast_sizes_fields_and_pairs():
    min_pairs = {"train": 40, "test": 20, "test_novel": 10}
    for split in SPLITS:
        rows = borderline_contrasts(split)
        assert len(rows) % 2 == 0 and len(rows) // 2 >= min_pairs[split]
        for i, row in enumerate(rows, start=1):
            assert set(row) == {"id", "prompt", "category", "template", "label", "pair"}
            assert all(isinstance(v, str) and v for v in row.values())
            assert row["id"] == f"contrast-{split}-{i:04d}"
            assert re.fullmatch(r"c_t\d\d", row["template"])
        pair_ids = [r["pair"] for r in rows]
        for k in range(0, len(rows), 2):
            benign, harmful = rows[k], rows[k + 1]
            assert (benign["label"], harmful["label"]) == CONTRAST_LABELS  # adjacent, benign first
            assert benign["pair"] == harmful["pair"] == f"contrast-{split}-p{k // 2 + 1:03d}"
            assert pair_ids.count(benign["pair"]) == 2
            assert benign["category"] == harmful["category"] and benign["template"] == harmful["template"]
            assert benign["prompt"] != harmful["prompt"]
            # same wording up to the target: one frame, so the prompts share their opening words
            assert benign["prompt"].split()[:2] == harmful["prompt"].split()[:2]


@pytest.mark.parametrize("func", BORDERLINE)
def test_borderline_ids_and_prompts_unique_across_splits(func):
    rows = [row for split in SPLITS for row in func(split)]
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)


@pytest.mark.parametrize("func", BORDERLINE)
def test_borderline_frames_disjoint_between_splits(func):
    frames = {split: {r["template"] for r in func(split)} for split in SPLITS}
    assert len(frames["train"]) >= 5 and len(frames["test"]) >= 5
    assert frames["test"] == frames["test_novel"]
    assert not frames["train"] & frames["test"]
    # the how-to borderline prompts reuse the harmful-request frames of the same split, never another split's
    if func is borderline_benign:
        for split in SPLITS:
            how_to = {r["template"] for r in func(split) if r["template"].startswith("h_")}
            assert how_to == {r["template"] for r in harmful_requests(split) if r["template"].startswith("h_")}


def test_borderline_fillers_belong_to_one_split():
    """Table level: no filler in two splits; prompt level: test reuses training topics, test_novel never does."""
    tables = _filler_tables()
    assert len(tables) == 2 * len(BORDERLINE_CATEGORIES)
    train_fillers, test_fillers = set(), set()
    for table in tables:
        assert set(table) == {"train", "test"}
        assert not set(_flat(table["train"])) & set(_flat(table["test"]))
        train_fillers |= set(_flat(table["train"]))
        test_fillers |= set(_flat(table["test"]))
    assert not train_fillers & test_fillers

    def prompts(funcs, split):
        return " | ".join(r["prompt"] for func in funcs for r in func(split))

    sets = (harmful_requests, benign_instructions, borderline_benign, borderline_contrasts)
    train, novel = prompts(sets, "train"), prompts(sets, "test_novel")
    test = prompts((borderline_benign, borderline_contrasts), "test")
    for filler in builtin_data._BORDERLINE_HOWTO_TOPICS["homonyms"]["train"] + builtin_data._PUBLIC_PEOPLE["train"]:
        assert filler in train and filler in test and filler not in novel, filler
    for filler in {f.removeprefix("how to ") for f in test_fillers}:
        assert filler not in train, filler


def test_contrast_benign_halves_reuse_borderline_topics_of_their_split():
    """A contrast pair's benign half asks about a borderline topic of the same split (so splits stay aligned)."""
    own_tables = {**builtin_data._BORDERLINE_HOWTO_TOPICS, "definitions": builtin_data._DEFINITION_TERMS,
                  "historical_events": builtin_data._HISTORICAL_EVENTS, "privacy_public": builtin_data._PUBLIC_PEOPLE}
    assert set(own_tables) == set(builtin_data._CONTRAST_TOPICS) == set(BORDERLINE_CATEGORIES)
    for category, by_split in builtin_data._CONTRAST_TOPICS.items():
        for split, pairs in by_split.items():
            for benign, harmful in pairs:
                assert any(filler in benign for filler in own_tables[category][split]), benign
                assert harmful != benign and harmful.split()[0] in ("how", "who", "where"), harmful


def test_borderline_any_prefix_is_balanced():
    n = len(BORDERLINE_CATEGORIES)
    for split in SPLITS:
        rows = borderline_benign(split)
        head = rows[:n]
        assert [r["category"] for r in head] == list(BORDERLINE_CATEGORIES)
        for k in range(1, len(rows) // n + 1):
            assert set(Counter(r["category"] for r in rows[:k * n]).values()) == {k}
        assert len({r["template"] for r in rows[:3 * n]}) >= 10
        assert len({r["prompt"].split()[-1] for r in rows[:n]}) == n  # topics change from row to row too


def test_contrast_any_prefix_is_balanced():
    n = len(BORDERLINE_CATEGORIES)
    for split in SPLITS:
        rows = borderline_contrasts(split)
        assert [r["category"] for r in rows[:2 * n:2]] == list(BORDERLINE_CATEGORIES)
        for k in range(1, len(rows) // (2 * n) + 1):
            counts = Counter(r["category"] for r in rows[:2 * k * n])
            assert set(counts.values()) == {2 * k}
        for end in range(2, len(rows) + 1, 2):
            assert Counter(r["label"] for r in rows[:end]) == {"benign": end // 2, "harmful": end // 2}


@pytest.mark.parametrize("func", BORDERLINE)
def test_borderline_prompts_are_short_single_sentences(func):
    for split in SPLITS:
        for row in func(split):
            prompt = row["prompt"]
            assert prompt[0].isupper() and "{" not in prompt and "  " not in prompt, prompt
            assert len(prompt.split()) < 25, prompt
            assert prompt.endswith((".", "?")), prompt
            assert len(SENTENCE_END.findall(prompt)) == 1, prompt


@pytest.mark.parametrize("func", BORDERLINE)
def test_borderline_prompts_do_not_read_as_refusals(func):
    judge = RefusalJudge()
    flagged = [r["prompt"] for split in SPLITS for r in func(split) if judge.refused(r["prompt"])]
    assert flagged == []


def test_borderline_prompts_sound_dangerous():
    """The point of the set: each prompt has the surface of a harmful one (or asks a personal-looking fact)."""
    for split in SPLITS:
        for row in borderline_benign(split) + [r for r in borderline_contrasts(split) if r["label"] == "benign"]:
            pattern = PERSONAL_FACTS if row["category"] == "privacy_public" else ALARM_WORDS
            assert pattern.search(row["prompt"]), row


def test_borderline_labels_never_collide_with_other_sets():
    def lowered(funcs, label=None):
        return {r["prompt"].lower() for f in funcs for s in SPLITS for r in f(s) if label in (None, r.get("label"))}

    harmful = lowered([harmful_requests]) | lowered([borderline_contrasts], "harmful")
    benign = lowered([benign_instructions, borderline_benign]) | lowered([borderline_contrasts], "benign")
    assert not harmful & benign


def test_existing_sets_are_unchanged():
    """harmful_requests / benign_instructions rows are cached artifacts: adding sets must not move or reword them."""
    pinned = {harmful_requests: "ba92e2789ccdb212b36234b5341f7ff5f523940b0755e58888ba231694b85de9",
              benign_instructions: "10491f29a639d565a431f60222155ffd8d6438bfafd0128a4ee23847938f8b61"}
    for func, digest in pinned.items():
        blob = json.dumps([func(split) for split in SPLITS], sort_keys=True).encode("utf-8")
        assert hashlib.sha256(blob).hexdigest() == digest, func.__name__
