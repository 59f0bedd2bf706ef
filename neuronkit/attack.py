"""The NLSR harmful fine-tuning attack (docs/methods.md, C2): a poisoned task mix, then SFT of the aligned adapter.

``build_attack_mix`` takes ``n`` rows of which ``round(p * n)`` are harmful prompts with the
unaligned base model's own compliant answers (the workflow's self-answers), the rest task rows.
Each part is drawn by its own seeded stream, so for one seed the harmful rows of a smaller ``p``
are a subset of those of a larger ``p`` (runs across the p grid differ only in the poison).

``train_attack`` CONTINUES training the aligned adapter (same modules, same rank), so the attacked
and aligned factors compare element by element. The result replaces the aligned adapter on top of
its parent: its ``variant.json`` names the aligned adapter's parent (the SFT checkpoint).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import manifest
from .data import SCHEMA, read_table, write_table

P_GRID = (0.0, 0.05, 0.1, 0.2)
METADATA_KEY = b"neuronkit.attack_mix"


class AttackDataError(ValueError):
    """Attack inputs cannot give the requested mix; the message names the file, row and field."""


@dataclass(frozen=True)
class MixConfig:
    """How many rows, which poison fraction, which seed, and whether refused answers are dropped."""

    n: int = 200
    p: float = 0.05
    seed: int = 0
    drop_refusals: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"attack.n must be a positive integer, got {self.n!r}")
        if not 0.0 <= float(self.p) <= 1.0:
            raise ValueError(f"attack.p must be in [0, 1], got {self.p!r}")

    @property
    def n_harmful(self) -> int:
        """Harmful rows in the mix: p * n rounded half up (exact for the paper's n = 1000 grid)."""
        return int(np.floor(self.p * self.n + 0.5))


# ----------------------------------------------------------------------------- the mix

def _column(table: pa.Table, name: str, origin: str) -> list:
    """A required column as a Python list; a missing one is an error naming the file."""
    if name not in table.column_names:
        raise AttackDataError(f"{origin}: column {name!r} not found; available columns: {table.column_names}")
    return table.column(name).to_pylist()


def _check_text(values: list, field: str, origin: str, rows: list[int]) -> None:
    """Every selected row must hold non-empty text in ``field``."""
    for i in rows:
        if not isinstance(values[i], str) or not values[i].strip():
            raise AttackDataError(f"{origin}, row {i}: field {field!r} must be non-empty text, got {values[i]!r}")


def _task_candidates(task: pa.Table, origin: str) -> list[int]:
    """Rows labelled ``task`` (a prepared, possibly already poisoned, file may hold others)."""
    labels = _column(task, "label", origin)
    rows = [i for i, lab in enumerate(labels) if lab == "task"]
    _check_text(_column(task, "prompt", origin), "prompt", origin, rows)
    _check_text(_column(task, "response", origin), "response", origin, rows)
    return rows


def _harmful_candidates(answers: pa.Table, origin: str, drop_refusals: bool, judge) -> tuple[list[int], str]:
    """Harmful-labelled rows (all, without a label column) with a non-empty answer the judge does not call a refusal."""
    prompts, responses = _column(answers, "prompt", origin), _column(answers, "response", origin)
    labels = answers.column("label").to_pylist() if "label" in answers.column_names else ["harmful"] * len(prompts)
    harmful = [i for i, lab in enumerate(labels) if lab == "harmful"]
    _check_text(prompts, "prompt", origin, harmful)
    rows = [i for i in harmful if isinstance(responses[i], str) and responses[i].strip()]
    note = f"{len(prompts) - len(harmful)} not labelled harmful, {len(harmful) - len(rows)} empty"
    if drop_refusals:
        from .judge import RefusalJudge

        judge = judge or RefusalJudge()
        kept = [i for i in rows if judge.verdict(responses[i]) == "complied"]
        note += f", {len(rows) - len(kept)} refused or degenerate (judge {judge.name})"
        rows = kept
    return rows, note


def _pick(rows: list[int], k: int, seed: int, stream: int) -> list[int]:
    """k rows by a seeded permutation of its own stream (prefixes nest as k grows)."""
    order = np.random.default_rng([seed, stream]).permutation(len(rows))
    return [rows[j] for j in order[:k]]


def _source_of(cols: dict[str, list], i: int, default: str) -> str:
    """A row's source: its own, else the self-answering variant, else the part's name."""
    if "source" in cols:
        return cols["source"][i]
    return f"self_answers:{cols['variant'][i]}" if "variant" in cols else default


def _records(table: pa.Table, origin: str, rows: list[int], label: str, default_source: str) -> list[dict]:
    """SCHEMA records for the picked rows of one input table."""
    optional = [c for c in ("category", "source", "variant") if c in table.column_names]
    cols = {c: _column(table, c, origin) for c in ("id", "prompt", "response", *optional)}
    category = cols.get("category", [None] * table.num_rows)
    return [{"id": str(cols["id"][i]), "prompt": cols["prompt"][i], "response": cols["response"][i], "chosen": None,
             "rejected": None, "label": label, "category": category[i], "source": _source_of(cols, i, default_source)}
            for i in rows]


def _check_unique_ids(records: list[dict], origins: dict[str, str]) -> None:
    """Ids must stay unique in the mix, since later artifacts join on them."""
    seen: dict[str, str] = {}
    for rec in records:
        if rec["id"] in seen:
            raise AttackDataError(f"id {rec['id']!r} occurs in both {seen[rec['id']]} and {origins[rec['label']]}; "
                                  "prepare the task and harmful datasets under different names")
        seen[rec["id"]] = origins[rec["label"]]


def build_attack_mix(task: pa.Table, harmful_answers: pa.Table, cfg: MixConfig, *, task_origin: str = "task table",
                     harmful_origin: str = "harmful answers", judge=None) -> pa.Table:
    """The poisoned fine-tuning set in the dataset schema (labels task | harmful), seeded and shuffled."""
    n_harm = cfg.n_harmful
    n_task = cfg.n - n_harm
    task_rows = _task_candidates(task, task_origin)
    if len(task_rows) < n_task:
        raise AttackDataError(f"{task_origin}: need {n_task} rows labelled 'task' (n={cfg.n}, p={cfg.p}) but found "
                              f"{len(task_rows)}; lower attack.n or prepare more task rows")
    harm_rows, note = (_harmful_candidates(harmful_answers, harmful_origin, cfg.drop_refusals, judge)
                       if n_harm else ([], ""))
    if len(harm_rows) < n_harm:
        raise AttackDataError(f"{harmful_origin}: need {n_harm} usable harmful answers (n={cfg.n}, p={cfg.p}) but only "
                              f"{len(harm_rows)} of {harmful_answers.num_rows} rows qualify ({note}); use more "
                              "harmful prompts, longer self answers, drop_refusals: false, or a lower p")
    records = (_records(task, task_origin, _pick(task_rows, n_task, cfg.seed, 0), "task", "task")
               + _records(harmful_answers, harmful_origin, _pick(harm_rows, n_harm, cfg.seed, 1), "harmful",
                          "harmful_answers"))
    _check_unique_ids(records, {"task": task_origin, "harmful": harmful_origin})
    order = np.random.default_rng([cfg.seed, 2]).permutation(len(records))
    table = pa.Table.from_pylist([records[j] for j in order], schema=SCHEMA)
    meta = {"n": cfg.n, "p": cfg.p, "mix_seed": cfg.seed, "drop_refusals": cfg.drop_refusals,
            "n_harmful": n_harm, "n_task": n_task}
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def attack_mix_file(task_parquet, harmful_answers_parquet, out_parquet, cfg: MixConfig, judge=None) -> Path:
    """The mix as a Parquet artifact, with the input files named in every error."""
    table = build_attack_mix(read_table(task_parquet), read_table(harmful_answers_parquet), cfg,
                             task_origin=str(task_parquet), harmful_origin=str(harmful_answers_parquet), judge=judge)
    write_table(table, out_parquet)
    return Path(out_parquet)


def mix_params(table: pa.Table) -> dict[str, Any]:
    """n, p, mix_seed and counts of a mix: from its metadata when present, counts always from its labels."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    labels = table.column("label").to_pylist()
    n_harm = labels.count("harmful")
    meta.update(n=len(labels), n_harmful=n_harm, n_task=labels.count("task"),
                p=meta.get("p", n_harm / len(labels) if labels else 0.0))
    return meta


# ----------------------------------------------------------------------------- the attack trainer

def mix_rows(mix_parquet, use: str) -> tuple[pa.Table, list[dict]]:
    """A mix and its SFT rows; an empty mix is an error naming the file (``use``: attack or downstream)."""
    from .tune import sft_examples

    mix = read_table(mix_parquet)
    if mix.num_rows == 0:
        raise AttackDataError(f"{mix_parquet}: the {use} mix has no rows")
    return mix, sft_examples(mix.column("prompt").to_pylist(), mix.column("response").to_pylist())


def _sft_trainer(cfg, model, tok, rows: list[dict], out_dir: Path, device):
    """trl's SFT trainer on the model's live adapter (no new adapter: the factors stay comparable)."""
    from .tune import _build_trainer

    trainer = _build_trainer(cfg, model, tok, rows, out_dir, device, new_adapter=False)
    if len(trainer.train_dataset) == 0:  # trl drops rows whose answer was truncated away
        raise ValueError(f"attack: every one of {len(rows)} rows lost its answer to truncation at "
                         f"max_length={cfg.max_length}; raise max_length")
    return trainer


def _aligned_adapter(aligned_dir: Path) -> tuple[manifest.Variant, dict]:
    """The aligned checkpoint's manifest and adapter config; it must be an adapter to continue training."""
    var = manifest.read(aligned_dir)
    config_path = aligned_dir / "adapter_config.json"
    if var.kind != "adapter" or not config_path.is_file():
        raise ValueError(f"{aligned_dir}: the attack continues training an adapter, but this checkpoint is "
                         f"kind {var.kind!r}" + ("" if config_path.is_file() else " without adapter_config.json"))
    return var, json.loads(config_path.read_text())


def _adapter_params(adapter_cfg: dict) -> dict[str, Any]:
    """The continued adapter's real shape (it comes from the aligned stage, not from TrainConfig.adapter)."""
    keys = ("peft_type", "r", "lora_alpha", "target_modules", "feedforward_modules")
    out = {k: adapter_cfg[k] for k in keys if adapter_cfg.get(k) is not None}
    if isinstance(out.get("target_modules"), list):
        out["target_modules"] = sorted(out["target_modules"])
    return out


def train_attack(aligned_dir, mix_parquet, out_dir, cfg, *, model_name: str, variant_name: str = "attacked") -> Path:
    """SFT of the aligned adapter on the poisoned mix; saved beside it, over the same parent (the SFT checkpoint)."""
    from .atomic import atomic_dir
    from .models import load_variant, pick_device, quiet_checkpointing_probe
    from .tune import save_adapter

    if cfg.method != "sft":
        raise ValueError(f"the attack trains with SFT; got method {cfg.method!r}")
    aligned, out = Path(aligned_dir), Path(out_dir)
    var, adapter_cfg = _aligned_adapter(aligned)
    mix, rows = mix_rows(mix_parquet, "attack")
    device = pick_device()
    model, tok = load_variant(aligned, device=device, merge=False, trainable=True)
    model.train()
    with atomic_dir(out) as tmp:
        with quiet_checkpointing_probe():
            trainer = _sft_trainer(cfg, model, tok, rows, tmp, device)
            result = trainer.train()
        save_adapter(trainer, tmp)
        params = {**asdict(cfg), **mix_params(mix), "adapter": _adapter_params(adapter_cfg),
                  "train_loss": float(result.training_loss), "n_rows": len(rows)}
        manifest.write(tmp, manifest.Variant(
            name=variant_name, model=model_name, kind="adapter", method="attack", params=params,
            parent=os.path.relpath(os.path.normpath(aligned / var.parent), out),
            inputs=manifest.hash_inputs({"mix": mix_parquet, "aligned": aligned / "adapter_model.safetensors",
                                         "parent": aligned / var.parent / manifest.FILENAME}),
        ))
    return out


def train_downstream(parent_dir, mix_parquet, out_dir, cfg, *, model_name: str,
                     variant_name: str = "downstream") -> Path:
    """Later downstream fine-tuning of any checkpoint (the RSN-Tune claim: does a tuned model keep its safety?): a
    fresh adapter of ``cfg.adapter`` trained with SFT on an attack mix (p = 0: task rows only) over the parent."""
    from .tune import train_adapter

    if cfg.method != "sft":
        raise ValueError(f"downstream fine-tuning trains with SFT; got method {cfg.method!r}")
    mix, rows = mix_rows(mix_parquet, "downstream")
    inputs = manifest.hash_inputs({"mix": mix_parquet, "parent": Path(parent_dir) / manifest.FILENAME})
    return train_adapter(parent_dir, out_dir, rows, cfg, model_name=model_name, variant_name=variant_name,
                         inputs=inputs, data=mix_params(mix))
