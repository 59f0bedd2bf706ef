"""Alignment wrappers over trl: SFT, then DPO / ORPO / KTO / SimPO, with LoRA or IA3 adapters.

Each stage trains one adapter on top of its parent checkpoint (adapters below it are merged in
memory first), so a checkpoint is a small PEFT directory plus ``variant.json``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import manifest
from .models import load_variant, pick_device, quiet_checkpointing_probe

PREFERENCE_METHODS = ("dpo", "orpo", "kto", "simpo")
METHODS = ("sft",) + PREFERENCE_METHODS


@dataclass(frozen=True)
class AdapterConfig:
    """Which PEFT adapter to train and where."""

    kind: str = "lora"                       # lora | ia3
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    feedforward_modules: tuple[str, ...] = ("down_proj",)   # IA3 only: scale the input (= the MLP neurons)

    def __post_init__(self) -> None:
        if self.kind not in ("lora", "ia3"):
            raise ValueError(f"adapter.kind must be lora or ia3, got {self.kind!r}")
        if self.kind == "ia3" and not set(self.feedforward_modules) <= set(self.target_modules):
            raise ValueError("adapter.feedforward_modules must be a subset of adapter.target_modules for IA3")

    def peft_config(self):
        """The peft config object for this adapter."""
        from peft import IA3Config, LoraConfig

        if self.kind == "ia3":
            return IA3Config(task_type="CAUSAL_LM", target_modules=list(self.target_modules),
                             feedforward_modules=list(self.feedforward_modules))
        return LoraConfig(task_type="CAUSAL_LM", r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules))


@dataclass(frozen=True)
class TrainConfig:
    """One training stage; ``__post_init__`` rejects inconsistent settings before any compute."""

    method: str = "sft"
    learning_rate: float = 1e-3
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    beta: float = 0.1                         # DPO/KTO/ORPO/SimPO strength
    simpo_gamma: float = 0.5
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    weight_decay: float = 0.0
    padding_free: bool = False                # SFT only: flatten each batch into one sequence (no pad tokens)
    seed: int = 0
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"align method must be one of {METHODS}, got {self.method!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.padding_free and self.method != "sft":
            raise ValueError(f"padding_free applies to sft only, not {self.method!r}")

    @classmethod
    def from_config(cls, method: str, cfg: dict[str, Any]) -> "TrainConfig":
        """Build from a config section; the nested ``adapter`` mapping becomes an AdapterConfig."""
        cfg = dict(cfg)
        adapter = cfg.pop("adapter", {}) or {}
        for key in ("target_modules", "feedforward_modules"):
            if key in adapter:
                adapter[key] = tuple(adapter[key])
        return cls(method=method, adapter=AdapterConfig(**adapter), **cfg)


def checkpointing_field() -> str:
    """TrainingArguments' activation-checkpointing field, under the name this transformers release uses.

    transformers 5.24 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` and made the
    old name a deprecated alias; the public dataclass fields say which one is current.
    """
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def device_training_args(device: torch.device) -> dict[str, Any]:
    """Per-device trainer settings. On CPU: fp32, no activation checkpointing (both slow it down)."""
    if device.type == "cuda":
        return {"bf16": torch.cuda.is_bf16_supported(), checkpointing_field(): True}
    return {"bf16": False, "fp16": False, checkpointing_field(): False, "use_cpu": True}


def _common_args(cfg: TrainConfig, out_dir: Path, device: torch.device) -> dict[str, Any]:
    """TrainingArguments shared by every trl trainer."""
    return dict(
        output_dir=str(out_dir / "trainer"), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, warmup_steps=float(cfg.warmup_ratio),
        lr_scheduler_type=cfg.scheduler, weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0,
        disable_tqdm=False, **device_training_args(device),
    )


# ----------------------------------------------------------------------------- datasets


def sft_examples(prompts: Sequence[str], targets: Sequence[str]) -> list[dict]:
    """Conversational prompt/completion rows: the loss covers the assistant answer only."""
    return [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": t}]}
            for p, t in zip(prompts, targets, strict=True)]


def preference_examples(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> list[dict]:
    """Conversational paired rows for DPO / ORPO / SimPO."""
    return [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]}
            for p, c, r in zip(prompts, chosen, rejected, strict=True)]


def kto_examples(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> list[dict]:
    """Unpaired rows for KTO: each pair gives one desirable and one undesirable completion."""
    rows = []
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        user = [{"role": "user", "content": p}]
        rows.append({"prompt": user, "completion": [{"role": "assistant", "content": c}], "label": True})
        rows.append({"prompt": user, "completion": [{"role": "assistant", "content": r}], "label": False})
    return rows


# ----------------------------------------------------------------------------- trainers


def _build_trainer(cfg: TrainConfig, model, tok, rows: list[dict], out_dir: Path, device: torch.device,
                   arg_overrides: dict[str, Any] | None = None, new_adapter: bool = True):
    """The trl trainer for ``cfg.method``: a fresh adapter from ``cfg.adapter``, or the model's live one."""
    from datasets import Dataset

    data = Dataset.from_list(rows)
    common = {**_common_args(cfg, out_dir, device), **(arg_overrides or {})}
    peft_config = cfg.adapter.peft_config() if new_adapter else None
    if cfg.method == "sft":
        from trl import SFTConfig, SFTTrainer

        # trl enforces max_length only on padded batches; padding-free gets the same truncation from us
        args = SFTConfig(max_length=None if cfg.padding_free else cfg.max_length, padding_free=cfg.padding_free,
                         **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
        if cfg.padding_free:
            trainer.train_dataset = truncate_tokenized(trainer.train_dataset, cfg.max_length)
        return trainer
    if cfg.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=cfg.beta, max_length=cfg.max_length, **common)
        return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    if cfg.method == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(beta=cfg.beta, max_length=cfg.max_length, **common)
        return KTOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    if cfg.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(beta=cfg.beta, max_length=cfg.max_length, **common)
        return ORPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    from trl.experimental.cpo import CPOConfig, CPOTrainer  # simpo = CPO trainer with the SimPO loss

    args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=cfg.beta, simpo_gamma=cfg.simpo_gamma,
                     max_length=cfg.max_length, **common)
    return CPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)


def truncate_tokenized(dataset, max_length: int):
    """Tokenized SFT rows cut to their first ``max_length`` tokens, rows left without a scored token dropped: what
    trl does to padded batches, for padding-free ones."""
    if max(len(ids) for ids in dataset["input_ids"]) <= max_length:
        return dataset
    cut = dataset.map(lambda row: {"input_ids": row["input_ids"][:max_length], "labels": row["labels"][:max_length]})
    return cut.filter(lambda row: any(label != -100 for label in row["labels"]))


def train_adapter(parent_dir: str | os.PathLike, out_dir: str | os.PathLike, rows: list[dict], cfg: TrainConfig,
                  *, model_name: str, variant_name: str, inputs: dict[str, str] | None = None,
                  data: dict[str, int] | None = None) -> Path:
    """Train one adapter stage on ``rows`` over the parent checkpoint and save it with its manifest."""
    if not rows:
        raise ValueError(f"{variant_name}: no training rows")
    from .atomic import atomic_dir

    out = Path(out_dir)
    device = pick_device()
    model, tok = load_variant(parent_dir, device=device, merge=True)
    model.train()
    with atomic_dir(out) as tmp:
        with quiet_checkpointing_probe():
            trainer = _build_trainer(cfg, model, tok, rows, tmp, device)
            result = trainer.train()
        save_adapter(trainer, tmp)
        params = asdict(cfg)
        params["train_loss"] = float(result.training_loss)
        params["n_rows"] = len(rows)
        if data:
            params["data"] = data
        manifest.write(tmp, manifest.Variant(
            name=variant_name, model=model_name, kind="adapter", parent=os.path.relpath(parent_dir, out),
            method=cfg.method, params=params, inputs=inputs or {},
        ))
    return out


def save_adapter(trainer, out: Path) -> None:
    """The trained adapter without the trainer's scratch folder, its config's module lists sorted (peft writes
    them in set order, which changes between identical runs)."""
    import json
    import shutil

    trainer.model.save_pretrained(str(out))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- workflow stages


def align_sft(base_dir, answers: dict[str, str], out_dir, cfg: TrainConfig, data_cfg, judge, *,
              model_name: str, variant_name: str = "sft") -> Path:
    """SFT: refusals for harmful prompts, the base model's own (kept) answers for benign ones (keeps helpfulness).

    ``answers`` maps each of ``data_cfg.datasets()`` to its self-answers file; ``judge`` decides which own answers
    are real answers (``alignment_data``).
    """
    from .alignment_data import load_alignment_rows, sft_targets

    rows = load_alignment_rows(answers, data_cfg, judge)
    prompts, targets = sft_targets(rows)
    inputs = manifest.hash_inputs({**{f"answers:{d}": p for d, p in answers.items()},
                                   "parent": Path(base_dir) / manifest.FILENAME})
    return train_adapter(base_dir, out_dir, sft_examples(prompts, targets), cfg, model_name=model_name,
                         variant_name=variant_name, inputs=inputs, data=rows.counts(data_cfg.own_answers))


def align_preference(sft_dir, answers: dict[str, str], out_dir, cfg: TrainConfig, data_cfg, judge, *,
                     model_name: str, variant_name: str = "aligned") -> Path:
    """Preference stage: a refusal preferred over the base model's real answer on harmful prompts.

    With ``data_cfg.benign_pairs``, benign prompts add the mirror pairs (the base model's answer preferred over a
    refusal), which teaches the model to answer safe requests that sound dangerous.
    """
    from .alignment_data import load_alignment_rows, preference_triples

    rows = load_alignment_rows(answers, data_cfg, judge)
    prompts, chosen, rejected = preference_triples(rows, data_cfg)
    builder = kto_examples if cfg.method == "kto" else preference_examples
    inputs = manifest.hash_inputs({**{f"answers:{d}": p for d, p in answers.items()},
                                   "parent": Path(sft_dir) / manifest.FILENAME})
    counts = rows.counts(data_cfg.own_answers)
    counts["benign_pairs"] = len(prompts) - counts["harmful_pairs"]
    return train_adapter(sft_dir, out_dir, builder(prompts, chosen, rejected), cfg, model_name=model_name,
                         variant_name=variant_name, inputs=inputs, data=counts)
