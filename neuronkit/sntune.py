"""SN-Tune / RSN-Tune (Zhao et al., ICLR 2025): fine-tune only the safety neurons' parameters.

A safety neuron owns a slice of a few weight matrices (docs/methods.md, B3):

- MLP neuron i: row i of ``up_proj`` (and of ``gate_proj`` with ``tune_gate``) and column i of
  ``down_proj``;
- q/k/v dimension d: row d of ``q_proj`` / ``k_proj`` / ``v_proj``;
- o dimension d (only if ``"o"`` is in ``modules``): column d of ``o_proj``.

Nothing is masked and no library source is touched. Each trained slice is a small fp32 delta
(``[n_rows, in]`` for rows, ``[out, n_cols]`` for columns) added to the projection's output by a
forward hook, and the transformers Trainer (with AdamW) sees only the deltas. So the optimizer keeps
state only for trained entries, weight decay and gradient clipping see only delta gradients (the
"mask" comes before clipping by construction), and frozen weights cannot move. After training, the deltas are folded
into the weights and the model is saved as a normal safetensors checkpoint.

    with NeuronDeltas(model, plan_targets(model, neurons)).attached():
        loss = model(**batch).loss   # the trained slices act, the frozen weights stay put
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import manifest
from .archs import MODULES, attn_module, mlp_module
from .conversation import IGNORE, Example, conversation_tokens, pad_right
from .neurons import NeuronIndex

FORMATS = ("chat", "plain")
DTYPES = ("float32", "bfloat16", "float16", "auto")
PAPER_MODULES = ("mlp", "q", "k", "v")

# matrix -> (where it lives, which part, axis the neuron indexes: 0 = output row, 1 = input column)
MATRICES: dict[str, tuple[str, str, int]] = {
    "up": ("mlp", "up", 0), "gate": ("mlp", "gate", 0), "down": ("mlp", "down", 1),
    "q": ("attn", "q", 0), "k": ("attn", "k", 0), "v": ("attn", "v", 0), "o": ("attn", "o", 1),
}


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SNTuneConfig:
    """SN-Tune settings; defaults are the paper's (docs/methods.md, B3) except ``format`` (our evals use chat)."""

    learning_rate: float = 1e-6          # paper 1e-6 (its code used 2e-6)
    epochs: int = 1
    batch_size: int = 4                  # effective batch = batch_size * grad_accum = 32
    grad_accum: int = 8
    max_length: int = 512
    warmup_ratio: float = 0.05           # cosine schedule, HF convention: ceil(ratio * steps) warmup steps
    max_grad_norm: float | None = 0.3    # None: no clipping
    weight_decay: float = 0.0            # decoupled, on the deltas only (pulls trained slices to their start)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_per_matrix: int | None = 100     # top neurons per matrix per layer by importance; None: no cap
    modules: tuple[str, ...] = PAPER_MODULES
    tune_gate: bool = False              # the paper trains up rows, not gate rows
    format: str = "chat"                 # chat: loss on the refusal only; plain: "{question}. {refusal}"
    n_docs: int = 50
    benign_docs: int = 0                 # extra benign prompts with the tuned model's own answers (paper: 0)
    dtype: str = "float32"               # bf16 weights cannot absorb 1e-6-sized updates
    checkpoint_steps: int = 50           # a resumable Trainer checkpoint every N optimizer steps; 0: never
    massive_down_ratio: float | None = None  # freeze the down column of MLP neurons this much above their layer
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in _field_values(self).items():
            _check_value(name, value)
        bad = sorted(set(self.modules) - set(MODULES))
        if bad or not self.modules:
            raise ValueError(f"sntune.modules: {bad or 'empty'} not valid; choose from {list(MODULES)}")
        if self.format not in FORMATS:
            raise ValueError(f"sntune.format must be one of {FORMATS}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"sntune.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"sntune.adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "SNTuneConfig":
        """Build from a config mapping, naming unknown keys and mistyped values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"sntune: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**{k: _coerce(k, v) for k, v in cfg.items()})


# name -> (type, may be None, lower bound, lower bound inclusive)
_RULES: dict[str, tuple[type, bool, float | None, bool]] = {
    "learning_rate": (float, False, 0.0, False), "epochs": (int, False, 1, True),
    "batch_size": (int, False, 1, True), "grad_accum": (int, False, 1, True), "max_length": (int, False, 2, True),
    "warmup_ratio": (float, False, 0.0, True), "max_grad_norm": (float, True, 0.0, False),
    "weight_decay": (float, False, 0.0, True), "adam_eps": (float, False, 0.0, False),
    "massive_down_ratio": (float, True, 0.0, False),
    "max_per_matrix": (int, True, 1, True), "n_docs": (int, False, 1, True),
    "benign_docs": (int, False, 0, True), "checkpoint_steps": (int, False, 0, True), "seed": (int, False, None, True),
    "tune_gate": (bool, False, None, True), "format": (str, False, None, True), "dtype": (str, False, None, True),
}


def _field_values(cfg: SNTuneConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in _RULES}


def _type_ok(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_value(name: str, value: Any) -> None:
    """One field's type and range, with the field named in the error."""
    kind, optional, low, inclusive = _RULES[name]
    if value is None and optional:
        return
    if not _type_ok(kind, value):
        raise ValueError(f"sntune.{name}: expected {kind.__name__}{' or null' if optional else ''}, "
                         f"got {value!r} ({type(value).__name__})")
    if low is not None and (value < low or (value == low and not inclusive)):
        raise ValueError(f"sntune.{name} must be {'>=' if inclusive else '>'} {low}, got {value!r}")
    if name == "warmup_ratio" and value >= 1:
        raise ValueError(f"sntune.warmup_ratio must be < 1, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    """Lists from YAML become tuples; numbers stay as given (wrong types fail in __post_init__)."""
    if name in ("modules", "adam_betas"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"sntune.{name}: expected a list, got {value!r} ({type(value).__name__})")
        return tuple(float(v) if name == "adam_betas" else v for v in value)
    if _RULES.get(name, (None,))[0] is float and _type_ok(float, value):
        return float(value)
    return value


# ----------------------------------------------------------------------------- selection


def select_neurons(index: NeuronIndex, modules: Sequence[str] = PAPER_MODULES,
                   max_per_matrix: int | None = 100) -> NeuronIndex:
    """Keep the first ``max_per_matrix`` neurons of each (layer, module) in rank order: the most important ones.

    The paper's code took an arbitrary 100 from a set; here importance decides.
    """
    taken: dict[tuple[int, str], int] = {}
    keep = []
    for row, key in enumerate(zip(index.layer.tolist(), index.module.tolist())):
        if key[1] in modules and (max_per_matrix is None or taken.get(key, 0) < max_per_matrix):
            taken[key] = taken.get(key, 0) + 1
            keep.append(row)
    rows = np.asarray(keep, dtype=np.int64)
    return NeuronIndex(index.layer[rows], index.module[rows], index.neuron[rows], index.score[rows],
                       dict(index.meta, sntune_cap=max_per_matrix, sntune_modules=list(modules)))


@dataclass
class Target:
    """One trained slice: rows (axis 0) or columns (axis 1) ``ids`` of one matrix of one layer."""

    layer: int
    matrix: str
    ids: torch.Tensor  # int64, sorted

    @property
    def axis(self) -> int:
        return MATRICES[self.matrix][2]


def matrices_for(module: str, tune_gate: bool = False) -> tuple[str, ...]:
    """The matrices a neuron of ``module`` owns."""
    if module == "mlp":
        return ("up", "gate", "down") if tune_gate else ("up", "down")
    return (module,)


def plan_targets(neurons: NeuronIndex, tune_gate: bool = False,
                 frozen_down: Mapping[int, Sequence[int]] | None = None) -> list[Target]:
    """Every (layer, matrix) slice the selected neurons own, in a fixed order; ``frozen_down`` (layer -> MLP
    neurons) keeps those neurons' down columns out (their up/gate rows still train)."""
    targets = []
    for module in MODULES:
        for layer, ids in neurons.by_layer(module).items():
            for matrix in matrices_for(module, tune_gate):
                kept = _without(ids, (frozen_down or {}).get(layer, ())) if matrix == "down" else ids
                targets += [Target(layer, matrix, kept)] if len(kept) else []
    return targets


def _without(ids: torch.Tensor, drop: Sequence[int]) -> torch.Tensor:
    """``ids`` less the ones in ``drop``, order kept."""
    return ids[~torch.isin(ids, torch.as_tensor(list(drop), dtype=ids.dtype))] if len(drop) else ids


@torch.no_grad()
def massive_mlp_neurons(model: torch.nn.Module, examples: Sequence[Example], neurons: NeuronIndex, ratio: float,
                        *, pad_id: int, batch_size: int = 8) -> dict[int, list[int]]:
    """Selected MLP neurons whose largest |h| on the training documents exceeds ``ratio`` times the median, over
    the layer's neurons, of the mean |h| (every real token): massive activations (Sun et al. 2024), whose down
    column would add the same vector to every prompt."""
    layers = neurons.by_layer("mlp")
    if not layers:
        return {}
    from .hooks import on_sites

    device = next(model.parameters()).device
    peak: dict[int, torch.Tensor] = {}
    total: dict[int, torch.Tensor] = {}
    count, mask_now = 0, []

    def observe(layer: int):
        def fn(h: torch.Tensor) -> None:
            a = h.detach().abs().double()[mask_now[0]]  # [real tokens, neurons]
            peak[layer] = torch.maximum(peak.get(layer, a.new_zeros(a.shape[1])), a.amax(0))
            total[layer] = total.get(layer, a.new_zeros(a.shape[1])) + a.sum(0)
        return fn

    was_training = model.training
    model.eval()
    with on_sites(model, {(l, "mlp"): observe(l) for l in layers}):
        for start in range(0, len(examples), batch_size):
            batch = pad_right(examples[start:start + batch_size], pad_id)
            mask_now[:] = [batch["attention_mask"].bool().to(device)]
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            count += int(batch["attention_mask"].sum())
    model.train(was_training)
    out = {}
    for layer, ids in layers.items():
        typical = float((total[layer] / max(1, count)).median())
        hits = [int(i) for i in ids.tolist() if peak[layer][int(i)] > ratio * typical]
        if hits:
            out[layer] = hits
    return out


def linear_of(model: torch.nn.Module, layer: int, matrix: str) -> torch.nn.Linear:
    """The projection a matrix name refers to, through the architecture table."""
    where, part, _ = MATRICES[matrix]
    return mlp_module(model, layer, part) if where == "mlp" else attn_module(model, layer, part)


# ----------------------------------------------------------------------------- deltas


class NeuronDeltas(torch.nn.Module):
    """Zero-initialised fp32 deltas for the target slices; hooks add them, ``fold`` writes them in."""

    def __init__(self, model: torch.nn.Module, targets: Sequence[Target]) -> None:
        super().__init__()
        self._model = [model]  # a list, so the model is not registered as a submodule
        self.targets = list(targets)
        self.deltas = torch.nn.ParameterList()
        for t in self.targets:
            weight = linear_of(model, t.layer, t.matrix).weight  # [out, in]
            t.ids = t.ids.to(weight.device)
            shape = (len(t.ids), weight.shape[1]) if t.axis == 0 else (weight.shape[0], len(t.ids))
            self.deltas.append(torch.nn.Parameter(torch.zeros(shape, dtype=torch.float32, device=weight.device)))

    @property
    def num_entries(self) -> int:
        return sum(d.numel() for d in self.deltas)

    @contextmanager
    def attached(self) -> Iterator["NeuronDeltas"]:
        """Add each delta to its projection's output while inside the block; hooks are removed on exit."""
        from .hooks import hooked

        with hooked((linear_of(self._model[0], t.layer, t.matrix), "post", _delta_hook(t, delta))
                    for t, delta in zip(self.targets, self.deltas)):
            yield self

    @torch.no_grad()
    def fold(self) -> None:
        """Write the deltas into the weights in place (only the target rows/columns change)."""
        for t, delta in zip(self.targets, self.deltas):
            weight = linear_of(self._model[0], t.layer, t.matrix).weight
            weight.index_add_(t.axis, t.ids, delta.to(weight.dtype))

    def rows_per_layer(self, num_layers: int) -> dict[str, list[int]]:
        """Trained rows (or columns) per matrix per layer."""
        out: dict[str, list[int]] = {}
        for t in self.targets:
            out.setdefault(t.matrix, [0] * num_layers)[t.layer] = len(t.ids)
        return out

    def entries_per_matrix(self) -> dict[str, int]:
        """Trained weight entries per matrix kind, summed over layers."""
        out: dict[str, int] = {}
        for t, delta in zip(self.targets, self.deltas):
            out[t.matrix] = out.get(t.matrix, 0) + delta.numel()
        return out


def _delta_hook(t: Target, delta: torch.nn.Parameter):
    """Forward hook: ``y[..., rows] += x @ D^T`` for rows, ``y += x[..., cols] @ D^T`` for columns."""
    ids = t.ids

    def row_hook(_module, args, out):
        extra = F.linear(args[0].to(delta.dtype), delta)  # [..., n_rows]
        return out.index_add(-1, ids, extra.to(out.dtype))

    def col_hook(_module, args, out):
        extra = F.linear(args[0].index_select(-1, ids).to(delta.dtype), delta)  # [..., out]
        return out + extra.to(out.dtype)

    return row_hook if t.axis == 0 else col_hook


# ----------------------------------------------------------------------------- data


def pick_documents(table, n_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Up to ``n_docs`` harmful prompts (seeded choice, table order kept) and the project's refusal for each."""
    from .alignment_data import refusals_for

    missing = {"id", "prompt", "category"} - set(table.column_names)
    if missing:
        raise ValueError(f"sntune: harmful prompt table lacks column(s) {sorted(missing)}")
    if table.num_rows == 0:
        raise ValueError("sntune: the harmful prompt table is empty")
    rows = np.sort(np.random.default_rng(seed).permutation(table.num_rows)[:n_docs])
    picked = table.take(rows)
    return picked.column("prompt").to_pylist(), refusals_for(picked.to_pylist())


def pick_benign_documents(table, n_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Up to ``n_docs`` benign prompts with the model's own answers (seeded choice), to keep helpfulness."""
    missing = {"id", "prompt", "response"} - set(table.column_names)
    if missing:
        raise ValueError(f"sntune: benign answer table lacks column(s) {sorted(missing)}")
    if table.num_rows == 0:
        raise ValueError("sntune: benign_docs > 0 but the benign answer table is empty")
    rows = np.sort(np.random.default_rng(seed + 1).permutation(table.num_rows)[:n_docs])
    picked = table.take(rows)
    prompts, answers = picked.column("prompt").to_pylist(), picked.column("response").to_pylist()
    for i, a in zip(picked.column("id").to_pylist(), answers):
        if not isinstance(a, str) or not a.strip():
            raise ValueError(f"sntune: benign answer row {i!r} has an empty response")
    return prompts, answers


def training_documents(harmful, benign, cfg: "SNTuneConfig") -> tuple[list[str], list[str], int]:
    """Harmful prompts with refusals, then (if ``benign_docs``) benign prompts with the model's own answers.

    Returns (questions, answers, number of benign documents at the end).
    """
    questions, answers = pick_documents(harmful, cfg.n_docs, cfg.seed)
    if not cfg.benign_docs:
        return questions, answers, 0
    if benign is None:
        raise ValueError("sntune: benign_docs > 0 needs a benign answer table (sntune.benign_dataset)")
    more_q, more_a = pick_benign_documents(benign, cfg.benign_docs, cfg.seed)
    return questions + more_q, answers + more_a, len(more_q)


def plain_document(question: str, refusal: str) -> str:
    """The paper's ``"{question}. {refusal}"``, without doubling a question's own end punctuation."""
    question = question.rstrip()
    return f"{question} {refusal}" if question.endswith((".", "?", "!")) else f"{question}. {refusal}"


def build_examples(tok, questions: Sequence[str], refusals: Sequence[str], fmt: str = "chat",
                   max_length: int = 512) -> list[Example]:
    """Tokenize documents; chat puts the loss on the assistant's refusal only, plain on every token."""
    out = []
    for q, r in zip(questions, refusals, strict=True):
        if fmt == "plain":
            ids = tok(plain_document(q, r), add_special_tokens=True)["input_ids"][:max_length]
            out.append(Example(ids, list(ids)))
            continue
        out.append(conversation_tokens(tok, q, r, max_length=max_length))
    return out


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What one SN-Tune run did, step by step (from the Trainer's log); ``optimizer`` is kept for inspection."""

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)   # before clipping, over delta grads only
    learning_rates: list[float] = field(default_factory=list)
    seconds: float = 0.0
    optimizer: torch.optim.Optimizer | None = None
    resumed_from: str | None = None

    @property
    def steps(self) -> int:
        return len(self.losses)


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps (moments and step counters)."""
    return sum(v.numel() * v.element_size() for state in opt.state.values() for v in state.values()
               if torch.is_tensor(v))


def labelled_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled tokens (the caller divides by the step's token count)."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def token_loss_sum(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``labelled_loss_sum`` of one padded batch through ``model``."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return labelled_loss_sum(logits, batch["labels"])


def mean_token_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """The Trainer's ``compute_loss_func``: the loss of an optimizer step is the mean over all its labelled tokens,
    whatever the micro-batching (``num_items_in_batch`` counts the step's ``shift_labels``)."""
    total = labelled_loss_sum(outputs.logits, labels)
    return total / (num_items_in_batch.clamp(min=1) if torch.is_tensor(num_items_in_batch) else
                    max(1, num_items_in_batch or 0))


class DeltaTrainee(torch.nn.Module):
    """What the Trainer trains: the deltas are its only parameters (and its whole state dict), acting on the
    frozen model held outside the module tree, so checkpoints hold the deltas alone."""

    def __init__(self, model: torch.nn.Module, deltas: NeuronDeltas) -> None:
        super().__init__()
        self._model = [model]
        self.deltas = deltas

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, shift_labels=None):
        with self.deltas.attached():
            return self._model[0](input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

    def train(self, mode: bool = True) -> "DeltaTrainee":
        super().train(mode)
        self._model[0].train(mode)
        return self


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenised documents as the Trainer's dataset; the collator pads them."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


def padding_collator(pad_id: int):
    """Right-pad a micro-batch; ``shift_labels`` lets the Trainer count the step's next-token targets."""
    def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        batch = pad_right(examples, pad_id)
        batch["shift_labels"] = batch["labels"][:, 1:]
        return batch
    return collate


def training_arguments(cfg: SNTuneConfig, work_dir: Path, device: torch.device, progress: bool):
    """TrainingArguments for SN-Tune: one log row per optimizer step, resumable checkpoints every
    ``checkpoint_steps`` (the latest one kept), the config's seed for shuffling."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work_dir), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate, max_grad_norm=cfg.max_grad_norm or 0.0,
        logging_steps=1, save_strategy="steps" if cfg.checkpoint_steps else "no", save_steps=cfg.checkpoint_steps or 1,
        save_total_limit=1, seed=cfg.seed, data_seed=cfg.seed, remove_unused_columns=False,
        dataloader_num_workers=0, report_to=[], disable_tqdm=not progress, use_cpu=device.type == "cpu",
    )


def delta_optimizer(params: Sequence[torch.nn.Parameter], cfg: SNTuneConfig, steps: int):
    """AdamW over the deltas only (so decay and state touch trained entries alone) with HF's cosine warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay, foreach=False)
    return opt, get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * steps), steps)


def latest_checkpoint(work_dir: Path | None) -> str | None:
    """The newest resumable Trainer checkpoint under ``work_dir``, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(work_dir)) if work_dir is not None and work_dir.is_dir() else None


def train_deltas(model: torch.nn.Module, deltas: NeuronDeltas, examples: Sequence[Example], cfg: SNTuneConfig,
                 *, pad_id: int, progress: bool = True, work_dir: str | os.PathLike | None = None,
                 callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train the deltas with the transformers Trainer; resumes from the newest checkpoint in ``work_dir``."""
    import tempfile

    from transformers import Trainer

    for p in model.parameters():
        p.requires_grad_(False)
    params = list(deltas.parameters())
    device = params[0].device
    steps = cfg.epochs * math.ceil(len(examples) / cfg.effective_batch)
    opt, schedule = delta_optimizer(params, cfg, steps)
    with tempfile.TemporaryDirectory(prefix="sntune-") as scratch:
        out = Path(work_dir) if work_dir is not None else Path(scratch)
        resume = latest_checkpoint(out)
        trainer = Trainer(model=DeltaTrainee(model, deltas), args=training_arguments(cfg, out, device, progress),
                          train_dataset=ExampleDataset(examples), data_collator=padding_collator(pad_id),
                          compute_loss_func=mean_token_loss, optimizers=(opt, schedule), callbacks=list(callbacks))
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
    model.eval()
    rows = [r for r in trainer.state.log_history if "loss" in r and "grad_norm" in r]
    return TrainResult(losses=[float(r["loss"]) for r in rows], grad_norms=[float(r["grad_norm"]) for r in rows],
                       learning_rates=[float(r["learning_rate"]) for r in rows], seconds=seconds,
                       optimizer=opt, resumed_from=Path(resume).name if resume else None)


# ----------------------------------------------------------------------------- pipeline


def tune_model(model: torch.nn.Module, tok, index: NeuronIndex, harmful, cfg: SNTuneConfig, *,
               foundation: NeuronIndex | None = None, benign=None, progress: bool = True,
               work_dir: str | os.PathLike | None = None, run_id: str = "",
               callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """SN-Tune (or RSN-Tune with ``foundation``) in place: select, train the deltas, fold them in.

    With ``work_dir``, Trainer checkpoints go there and a rerun resumes from them, but only when they were made
    for the same config, neurons, documents and ``run_id`` (the parent model's identity)."""
    index.check_fits(model.config, "sntune neuron index")
    if foundation is not None:
        foundation.check_fits(model.config, "sntune foundation index")
        index = index.difference(foundation)
    neurons = select_neurons(index, cfg.modules, cfg.max_per_matrix)
    if len(neurons) == 0:
        raise ValueError(f"sntune: no neurons of modules {list(cfg.modules)} left to tune")
    questions, answers, n_benign = training_documents(harmful, benign, cfg)
    examples = build_examples(tok, questions, answers, cfg.format, cfg.max_length)
    torch.manual_seed(cfg.seed)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    frozen = ({} if cfg.massive_down_ratio is None
              else massive_mlp_neurons(model, examples, neurons, cfg.massive_down_ratio, pad_id=pad_id))
    deltas = NeuronDeltas(model, plan_targets(neurons, cfg.tune_gate, frozen))
    if work_dir is not None:
        work_dir = prepared_resume_dir(work_dir, run_fingerprint(cfg, neurons, examples, run_id))
    result = train_deltas(model, deltas, examples, cfg, pad_id=pad_id, progress=progress, work_dir=work_dir,
                          callbacks=callbacks)
    deltas.fold()
    summary = _summary(model, neurons, deltas, result, examples, n_benign, foundation is not None)
    return {**summary, "massive_down_frozen": {str(layer): ids for layer, ids in frozen.items()},
            "n_massive_down_frozen": sum(len(ids) for ids in frozen.values())}


def _summary(model, neurons: NeuronIndex, deltas: NeuronDeltas, result: TrainResult,
             examples: Sequence[Example], n_benign: int, rsn: bool) -> dict[str, Any]:
    """Counts and losses of a run (timing is kept apart so manifests stay reproducible)."""
    total = sum(p.numel() for p in model.parameters())
    num_layers = model.config.num_hidden_layers
    return {
        "method": "rsntune" if rsn else "sntune",
        "n_docs": len(examples),
        "n_benign_docs": n_benign,
        "n_loss_tokens": sum(e.scored_tokens() for e in examples),
        "neurons": {m: c for m, c in neurons.per_layer_counts().items()},
        "trained_rows": deltas.rows_per_layer(num_layers),
        "trained_entries_per_matrix": deltas.entries_per_matrix(),
        "trained_entries": deltas.num_entries,
        "total_params": total,
        "trained_fraction": deltas.num_entries / total,
        "optimizer_state_bytes": optimizer_state_bytes(result.optimizer),
        "steps": result.steps,
        "losses": result.losses,
        "grad_norms": result.grad_norms,
        "learning_rates": result.learning_rates,
        "final_loss": result.losses[-1] if result.losses else None,
        "seconds": result.seconds,
        "seconds_per_step": result.seconds / max(1, result.steps),
        "resumed_from": result.resumed_from,
    }


def save_checkpoint(model: torch.nn.Module, tok, out_dir: str | os.PathLike, variant: manifest.Variant) -> Path:
    """safetensors + tokenizer + variant.json, written atomically (``atomic.atomic_dir``): no partial dir remains."""
    from .atomic import atomic_dir

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        manifest.write(tmp, variant)
    return Path(out_dir)


RUN_ONLY_KEYS = ("seconds", "seconds_per_step", "resumed_from")


def without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without wall-clock and resume fields, so identical runs write identical artifacts whether or not
    one was interrupted (those fields go to the log)."""
    return {k: v for k, v in summary.items() if k not in RUN_ONLY_KEYS}


def resume_dir(out_dir: str | os.PathLike) -> Path:
    """Where an SN-Tune run keeps its Trainer checkpoints: next to the output, outside what the workflow declares,
    so a killed job's progress survives until the rerun finishes."""
    out = Path(out_dir)
    return out.with_name(f".{out.name}.resume")


def run_fingerprint(cfg: SNTuneConfig, neurons: NeuronIndex, examples: Sequence[Example], run_id: str) -> str:
    """sha256 of everything a resumed run must share with the interrupted one."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps({"config": asdict(cfg), "run": run_id}, sort_keys=True, default=str).encode())
    for array in (neurons.layer, neurons.neuron):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("|".join(neurons.module.tolist()).encode())
    for e in examples:
        digest.update(np.asarray(e.input_ids + [-7] + e.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def prepared_resume_dir(work: str | os.PathLike, fingerprint: str) -> Path:
    """The resume folder, emptied when it holds checkpoints of another configuration or other inputs."""
    import shutil

    work = Path(work)
    stamp = work / "fingerprint.txt"
    if work.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    return work


def sn_tune(parent_dir: str | os.PathLike, out_dir: str | os.PathLike, index: NeuronIndex, harmful,
            cfg: SNTuneConfig, *, model_name: str, foundation: NeuronIndex | None = None, benign=None,
            inputs: dict[str, str] | None = None, progress: bool = True,
            callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Load the parent, SN-Tune it (RSN-Tune with ``foundation``) and save a full checkpoint; returns the summary."""
    from .models import load_variant, pick_device

    import shutil

    training_documents(harmful, benign, cfg)  # bad tables fail before the model loads
    torch.manual_seed(cfg.seed)
    model, tok = load_variant(parent_dir, device=pick_device(), dtype=cfg.dtype)
    parent_manifest = Path(parent_dir) / manifest.FILENAME
    parent_id = parent_manifest.read_text() if parent_manifest.is_file() else str(Path(parent_dir).resolve())
    work = resume_dir(out_dir)
    summary = tune_model(model, tok, index, harmful, cfg, foundation=foundation, benign=benign, progress=progress,
                         work_dir=work, run_id=parent_id, callbacks=callbacks)
    if summary["resumed_from"]:
        print(f"sntune: resumed from {work / summary['resumed_from']}")
    params = {**asdict(cfg), **{k: v for k, v in without_timing(summary).items() if k != "method"}}
    variant = manifest.Variant(name=summary["method"], model=model_name, kind="full", method=summary["method"],
                               parent=os.path.relpath(parent_dir, out_dir), params=params, inputs=inputs or {})
    save_checkpoint(model, tok, out_dir, variant)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def sntune_stage(parent_dir: str | os.PathLike, neurons_path: str | os.PathLike,
                 harmful_parquet: str | os.PathLike, out_dir: str | os.PathLike, cfg: SNTuneConfig, *,
                 model_name: str, foundation_path: str | os.PathLike | None = None,
                 benign_answers_parquet: str | os.PathLike | None = None) -> dict[str, Any]:
    """The workflow stage: read the neuron index(es) and prompts, tune, and hash the inputs into variant.json."""
    from .data import read_table

    named = {"neurons": neurons_path, "harmful": harmful_parquet, "parent": Path(parent_dir) / manifest.FILENAME}
    foundation = benign = None
    if foundation_path is not None:
        foundation = NeuronIndex.read(foundation_path)
        named["foundation"] = foundation_path
    if benign_answers_parquet is not None and cfg.benign_docs:
        benign = read_table(benign_answers_parquet)
        named["benign_answers"] = benign_answers_parquet
    return sn_tune(parent_dir, out_dir, NeuronIndex.read(neurons_path), read_table(harmful_parquet), cfg,
                   model_name=model_name, foundation=foundation, benign=benign, inputs=manifest.hash_inputs(named))
