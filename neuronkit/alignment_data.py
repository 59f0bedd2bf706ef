"""What the two alignment stages train on: the base model's own answers to every alignment prompt, split by label.

- Harmful rows: the SFT target is a refusal; the preference pair is a refusal (chosen) over the base model's own
  answer (rejected), kept only where that answer is a real answer (the judge says ``complied``): a refused or broken
  answer is no example of the behaviour to push down.
- Benign rows (everyday requests, and safe requests that merely sound dangerous): the SFT target is the base model's
  own answer, and with ``benign_pairs`` the mirror pair own answer (chosen) over a refusal (rejected). Only answers
  the judge calls ``complied`` are kept, so the model never learns to imitate a refusal or a loop of its own.

The rows come in the generations schema of the ``self_answers`` rule (``id, prompt, response, label, category``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .judge import COMPLIED, RefusalJudge

KEEP_MODES = ("complied", "all")  # keep only answers judged complied, or every answer (random test models)


@dataclass(frozen=True)
class AlignmentDataConfig:
    """The ``alignment`` config section's data choices: which datasets feed both stages, which answers are kept."""

    harmful: str = "harmful_train"
    benign: str = "benign_train"
    borderline: tuple[str, ...] = ()      # mixed or benign sets whose rows carry their own label
    own_answers: str = "complied"         # complied | all
    benign_pairs: bool = False            # preference pairs own answer > refusal on benign rows too
    balance: bool = False                 # at most as many benign rows (and pairs) as harmful ones

    def __post_init__(self) -> None:
        if self.own_answers not in KEEP_MODES:
            raise ValueError(f"alignment.own_answers must be one of {KEEP_MODES}, got {self.own_answers!r}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "AlignmentDataConfig":
        """From the validated section (its ``preference`` method key belongs to the trainer, not to the data)."""
        return cls(harmful=section["harmful"], benign=section["benign"],
                   borderline=tuple(section.get("borderline", ())), own_answers=section.get("own_answers", "complied"),
                   benign_pairs=bool(section.get("benign_pairs", False)), balance=bool(section.get("balance", False)))

    def datasets(self) -> list[str]:
        """Every dataset whose self answers alignment reads, in a fixed order without repeats."""
        return list(dict.fromkeys([self.harmful, self.benign, *self.borderline]))

    def expected_labels(self) -> dict[str, str]:
        """The label every row of the harmful and benign datasets must carry (borderline rows bring their own)."""
        return {self.harmful: "harmful", self.benign: "benign"}


@dataclass(frozen=True)
class AlignmentRows:
    """Alignment prompts with the base model's own answers, split by label, and what the answer filter dropped."""

    harmful: list[dict] = field(default_factory=list)     # every harmful row: id, prompt, category, response, verdict
    benign: list[dict] = field(default_factory=list)      # benign rows whose own answer was kept
    dropped: dict[str, int] = field(default_factory=dict)  # "benign:<verdict>" -> rows left out of training

    def harmful_pairs(self, keep: str) -> list[dict]:
        """Harmful rows whose own answer can serve as the rejected answer of a preference pair."""
        return [r for r in self.harmful if keep == "all" or r["verdict"] == COMPLIED]

    def counts(self, keep: str) -> dict[str, int]:
        """Row counts per use, recorded in the checkpoint's manifest."""
        pairs = self.harmful_pairs(keep)
        return {"harmful": len(self.harmful), "benign": len(self.benign), "harmful_pairs": len(pairs),
                "harmful_pairs_dropped": len(self.harmful) - len(pairs),
                **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())}}


def load_alignment_rows(answers: Mapping[str, str | Path], data_cfg: AlignmentDataConfig,
                        judge: RefusalJudge) -> AlignmentRows:
    """Read the self-answer files ``{dataset: path}`` and split their rows by label.

    Benign rows whose answer the judge does not call complied are dropped (unless ``own_answers`` is ``all``); every
    harmful row stays, with its verdict, because the SFT refusal target does not depend on the answer.
    """
    from .data import read_table

    keep, expected_labels = data_cfg.own_answers, data_cfg.expected_labels()
    harmful, benign, dropped = [], [], Counter()
    for dataset, path in answers.items():
        table = read_table(path)
        missing = [c for c in ("id", "prompt", "response", "label", "category") if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: self answers of dataset {dataset!r} lack columns {missing}; rerun self_answers")
        for row in table.select(["id", "prompt", "response", "label", "category"]).to_pylist():
            _check_label(row, dataset, expected_labels.get(dataset))
            row["dataset"] = dataset
            row["verdict"] = judge.verdict(row["response"] or "")
            if row["label"] == "harmful":
                harmful.append(row)
            elif keep == "all" or row["verdict"] == COMPLIED:
                benign.append(row)
            else:
                dropped[f"benign:{row['verdict']}"] += 1
    if data_cfg.balance and len(benign) > len(harmful):
        dropped["benign:balance"] = len(benign) - len(harmful)
        benign = _spread(benign, len(harmful))
    return AlignmentRows(harmful=harmful, benign=benign, dropped=dict(dropped))


def _spread(rows: list[dict], n: int) -> list[dict]:
    """``n`` rows taken round-robin over their (dataset, category) groups, so every kind of safe request stays."""
    from .builtin_data import interleave

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["category"]), []).append(row)
    return interleave(*groups.values())[:n]


def _check_label(row: dict, dataset: str, expected: str | None) -> None:
    """Alignment rows are harmful or benign, and a dataset configured as one kind holds only that kind."""
    label = row["label"]
    if label not in ("harmful", "benign"):
        raise ValueError(f"dataset {dataset!r}, row {row['id']!r}: alignment rows must be labelled harmful or "
                         f"benign, got {label!r}")
    if expected is not None and label != expected:
        raise ValueError(f"dataset {dataset!r}, row {row['id']!r}: configured as alignment.{expected} but the row is "
                         f"labelled {label!r}; list mixed-label datasets under alignment.borderline")


def refusals_for(rows: Sequence[Mapping], category: str | None = None) -> list[str]:
    """A deterministic refusal for every row (chosen by row id; by the row's category unless one is given)."""
    from .builtin_data import refusal_for

    return [refusal_for(r["id"], category or r.get("category") or "general") for r in rows]


def sft_targets(rows: AlignmentRows) -> tuple[list[str], list[str]]:
    """(prompts, targets): a refusal for every harmful row, the kept own answer for every benign row."""
    prompts = [r["prompt"] for r in rows.harmful] + [r["prompt"] for r in rows.benign]
    targets = refusals_for(rows.harmful) + [r["response"] for r in rows.benign]
    return prompts, targets


def preference_triples(rows: AlignmentRows, data_cfg: AlignmentDataConfig) -> tuple[list[str], list[str], list[str]]:
    """(prompts, chosen, rejected): refusal over own answer on harmful rows; with ``benign_pairs`` the mirror pairs."""
    harmful = rows.harmful_pairs(data_cfg.own_answers)
    prompts = [r["prompt"] for r in harmful]
    chosen = refusals_for(harmful)
    rejected = [r["response"] for r in harmful]
    if data_cfg.benign_pairs:
        benign = _spread(rows.benign, len(harmful)) if data_cfg.balance else rows.benign
        prompts += [r["prompt"] for r in benign]
        chosen += [r["response"] for r in benign]
        rejected += refusals_for(benign, category="general")  # the over-refusals to push down
    return prompts, chosen, rejected
