"""Safety-critical LoRA weights (NLSR; docs/methods.md, C4): SNIP, Wanda and low-rank scores on adapter factors.

Scores are computed per LoRA weight tensor (``lora_A`` ``[r, in]`` and ``lora_B`` ``[out, r]`` of
every adapted module) on a live PEFT model, from calibration examples whose targets are the
answer tokens only. Tensors are named exactly as in ``adapter_model.safetensors``
(``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``), so the masks line up
element by element with the adapter files that :mod:`neuronkit.realign` patches.

"Answer positions" are the positions whose next-token target is an answer token, i.e. the
positions that carry the loss. Each weight's input ``X`` there is:

- for ``lora_A``: the input of the adapted module (LoRA dropout is off: the model is in eval mode);
- for ``lora_B``: the ``r``-dim output of ``lora_A`` (call it ``Z``).

Formulas (``X`` stacked as ``[tokens, in]``, weights as ``[out, in]``):

- SNIP: ``|W| * sum_samples |dL_s/dW|`` with ``L_s`` the mean answer-token loss of sample ``s``;
- Wanda: ``|W_ij| * ||X[:, j]||_2``;
- low-rank: ``W' = V_k V_k^T W`` where ``V`` holds the right singular vectors of ``Y = X W^T``
  (``[tokens, out]``; equivalently the eigenvectors of ``W X^T X W^T``, the output-space
  covariance), sorted by singular value; ``k = floor(rank_fraction * min(W.shape))`` (for LoRA
  factors that is ``floor(0.8 * r)``); score ``|W'|``.

Only streaming sums are kept: the squared norm of every input feature of ``lora_A`` and the
``r x r`` Gram matrix ``Z^T Z``, which gives ``Y^T Y`` for both factors
(``A``: ``Z^T Z`` itself; ``B``: ``B Z^T Z B^T``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from ..conversation import IGNORE, conversation_tokens, pad_right
from ..hooks import hooked
from ..lora import factor_keys

METHODS = ("snip", "wanda", "lowrank")
GRANULARITIES = ("row", "tensor")


@dataclass(frozen=True)
class ScoreConfig:
    """How to score the reference adapter and how much of it counts as safety-critical."""

    method: str = "lowrank"
    keep_fraction: float = 0.2
    granularity: str | None = None     # None: per row for snip/wanda, per tensor for lowrank (as published)
    rank_fraction: float = 0.8         # lowrank: k = floor(rank_fraction * min(W.shape))
    batch_size: int = 4
    max_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"score method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.granularity is not None and self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES} or None, got {self.granularity!r}")
        if not 0.0 < self.rank_fraction <= 1.0:
            raise ValueError(f"rank_fraction must be in (0, 1], got {self.rank_fraction}")
        if self.batch_size < 1 or self.max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")

    @property
    def mask_granularity(self) -> str:
        """Per row for SNIP/Wanda and per tensor for low-rank unless set explicitly."""
        return self.granularity or ("tensor" if self.method == "lowrank" else "row")


# ----------------------------------------------------------------------------- calibration data


def calibration_batches(tok, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 4,
                        max_length: int = 256) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of the shared conversation tokenisation; labels are -100 except on answer tokens."""
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        ex = conversation_tokens(tok, prompt, answer, max_length=max_length)
        if not ex.scored_tokens():
            raise ValueError(f"calibration example {len(rows)}: no answer token fits in max_length={max_length}")
        rows.append(ex)
    if not rows:
        raise ValueError("no calibration examples")
    return [pad_right(rows[i:i + batch_size], tok.pad_token_id) for i in range(0, len(rows), batch_size)]


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` bool: position t carries loss when token t+1 is an answer token."""
    pos = torch.zeros_like(labels, dtype=torch.bool)
    pos[:, :-1] = labels[:, 1:] != IGNORE
    return pos


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over answer tokens (fp32)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                             ignore_index=IGNORE)


# ----------------------------------------------------------------------------- LoRA modules


def live_lora_layers(model) -> dict[str, tuple[torch.nn.Linear, torch.nn.Linear]]:
    """Adapted module name (as in the adapter file) -> its active (lora_A, lora_B) linears."""
    from peft.tuners.lora import LoraLayer

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            adapter = module.active_adapters[0]
            if adapter in module.lora_A:
                found[name] = (module.lora_A[adapter], module.lora_B[adapter])
    if not found:
        raise ValueError("the model has no active LoRA layer: load the adapter with merge=False")
    return found


class _ActStats:
    """Streaming input statistics of one LoRA module over loss positions (float64)."""

    def __init__(self, lora_a: torch.nn.Linear) -> None:
        self.sq_in = torch.zeros(lora_a.in_features, dtype=torch.float64)
        self.gram_z = torch.zeros(lora_a.out_features, lora_a.out_features, dtype=torch.float64)
        self.positions: torch.Tensor | None = None  # set per batch

    def hook(self, module, inputs, output) -> None:
        """Forward hook on lora_A: its input is X_A, its output is Z = X_B."""
        x = inputs[0][self.positions].double()          # [tokens, in]
        z = output[self.positions].double()             # [tokens, r]
        self.sq_in += (x * x).sum(0)
        self.gram_z += z.T @ z


def _progress(items: Iterable, desc: str, total: int | None = None):
    """tqdm over calibration batches (quiet when tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, total=total, leave=False)


def collect_activation_stats(model, batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, _ActStats]:
    """One no-grad pass over the batches with hooks that remove themselves, errors included."""
    modules = live_lora_layers(model)
    stats = {name: _ActStats(a) for name, (a, _) in modules.items()}
    device = next(model.parameters()).device
    with torch.no_grad(), hooked((modules[n][0], "post", s.hook) for n, s in stats.items()):
        for batch in _progress(batches, "activation stats"):
            pos = loss_positions(batch["labels"]).to(device)
            for s in stats.values():
                s.positions = pos
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    return stats


def sum_abs_grads(model, batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``sum_s |dL_s/dW|`` per LoRA tensor, one backward pass per calibration sample."""
    modules = live_lora_layers(model)
    params = {}
    for name, (a, b) in modules.items():
        key_a, key_b = factor_keys(name)
        params[key_a], params[key_b] = a.weight, b.weight
    totals = {k: torch.zeros_like(p, dtype=torch.float64, device="cpu") for k, p in params.items()}
    device = next(model.parameters()).device
    saved = {k: p.requires_grad for k, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        _accumulate_grads(model, batches, params, totals, device)
    finally:
        for k, p in params.items():
            p.requires_grad_(saved[k])
    return totals


def _accumulate_grads(model, batches, params: dict, totals: dict, device: torch.device) -> None:
    """Add |dL_s/dW| of every sample to ``totals`` (unpadded single-sample forwards)."""
    for batch in _progress(batches, "snip gradients"):
        for i in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][i].sum())
            ids, labels = batch["input_ids"][i:i + 1, :n].to(device), batch["labels"][i:i + 1, :n].to(device)
            loss = answer_loss(model(input_ids=ids).logits, labels)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for key, g in zip(params, grads):
                if g is not None:
                    totals[key] += g.detach().double().abs().cpu()


# ----------------------------------------------------------------------------- scores


def _weights(model) -> dict[str, torch.Tensor]:
    """Every LoRA factor by adapter-file key, detached, float64 on CPU."""
    out = {}
    for name, (a, b) in live_lora_layers(model).items():
        key_a, key_b = factor_keys(name)
        out[key_a], out[key_b] = a.weight.detach().double().cpu(), b.weight.detach().double().cpu()
    return out


def snip_scores(model, batches) -> dict[str, torch.Tensor]:
    """SNIP: |W| * sum over samples |dL/dW|."""
    weights = _weights(model)
    grads = sum_abs_grads(model, batches)
    return {k: weights[k].abs() * grads[k] for k in weights}


def wanda_scores(model, batches, stats: Mapping[str, _ActStats] | None = None) -> dict[str, torch.Tensor]:
    """Wanda: |W_ij| * ||X_j||_2 over answer positions, with X the factor's own input."""
    stats = stats or collect_activation_stats(model, batches)
    weights = _weights(model)
    out = {}
    for name, s in stats.items():
        key_a, key_b = factor_keys(name)
        out[key_a] = weights[key_a].abs() * s.sq_in.sqrt()[None, :]
        out[key_b] = weights[key_b].abs() * torch.diagonal(s.gram_z).clamp_min(0).sqrt()[None, :]
    return out


def lowrank_project(weight: torch.Tensor, output_gram: torch.Tensor, k: int) -> torch.Tensor:
    """``V_k V_k^T W`` with V the top-k eigenvectors of the output Gram ``Y^T Y`` (= right singular vectors of Y)."""
    evals, evecs = torch.linalg.eigh(output_gram.double())
    v = evecs[:, torch.argsort(evals, descending=True, stable=True)[:k]]
    return v @ (v.T @ weight.double())


def _b_output_basis(weight_b: torch.Tensor, gram_z: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k left singular vectors of ``B G^{1/2}``: the output basis of ``Y = Z B^T``, never forming ``[out, out]``."""
    evals, evecs = torch.linalg.eigh(gram_z.double())
    root = evecs * evals.clamp_min(0).sqrt()[None, :]            # G = root @ root.T
    u, _, _ = torch.linalg.svd(weight_b.double() @ root, full_matrices=False)
    return u[:, :k]


def lowrank_scores(model, batches, rank_fraction: float = 0.8,
                   stats: Mapping[str, _ActStats] | None = None) -> dict[str, torch.Tensor]:
    """Low-rank (ActSVD-style): |V_k V_k^T W| with V from the SVD of X W^T and k = floor(frac * rank)."""
    stats = stats or collect_activation_stats(model, batches)
    weights = _weights(model)
    out = {}
    for name, s in stats.items():
        key_a, key_b = factor_keys(name)
        w_a, w_b = weights[key_a], weights[key_b]
        out[key_a] = lowrank_project(w_a, s.gram_z, _keep_rank(w_a, rank_fraction)).abs()
        v = _b_output_basis(w_b, s.gram_z, _keep_rank(w_b, rank_fraction))
        out[key_b] = (v @ (v.T @ w_b)).abs()
    return out


def _keep_rank(weight: torch.Tensor, rank_fraction: float) -> int:
    """k = floor(rank_fraction * min(shape)); min(shape) is the LoRA rank for both factors."""
    return int(math.floor(rank_fraction * min(weight.shape)))


def adapter_scores(model, batches, cfg: ScoreConfig) -> dict[str, torch.Tensor]:
    """Dispatch to the configured score; float64 tensors keyed like the adapter file."""
    if cfg.method == "snip":
        return snip_scores(model, batches)
    if cfg.method == "wanda":
        return wanda_scores(model, batches)
    return lowrank_scores(model, batches, cfg.rank_fraction)


# ----------------------------------------------------------------------------- masks


def keep_count(n: int, keep_fraction: float) -> int:
    """How many of n entries to keep: round half up, at least one."""
    return min(n, max(1, int(math.floor(keep_fraction * n + 0.5))))


def top_fraction_mask(score: torch.Tensor, keep_fraction: float, granularity: str) -> torch.Tensor:
    """Bool mask of the top entries per row or per tensor; ties go to the lower index (stable)."""
    flat = score.reshape(1, -1) if granularity == "tensor" else score.reshape(score.shape[0], -1)
    k = keep_count(flat.shape[1], keep_fraction)
    idx = torch.argsort(flat, dim=1, descending=True, stable=True)[:, :k]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask.reshape(score.shape)


def masks_from_scores(scores: Mapping[str, torch.Tensor], cfg: ScoreConfig) -> dict[str, torch.Tensor]:
    """Safety-critical masks per tensor, in a fixed key order."""
    return {k: top_fraction_mask(scores[k], cfg.keep_fraction, cfg.mask_granularity) for k in sorted(scores)}


def mask_summary(masks: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor]) -> dict:
    """Counts and score statistics per tensor and overall."""
    tensors = {}
    for k, m in masks.items():
        s = scores[k]
        tensors[k] = {"shape": list(m.shape), "kept": int(m.sum()), "fraction": float(m.float().mean()),
                      "score_sum": float(s.sum()), "score_max": float(s.max()),
                      "kept_score_min": float(s[m].min()) if m.any() else None}
    kept = sum(v["kept"] for v in tensors.values())
    total = sum(m.numel() for m in masks.values())
    return {"n_tensors": len(masks), "kept": kept, "total": total, "fraction": kept / max(total, 1),
            "tensors": tensors}


def save_masks(masks: Mapping[str, torch.Tensor], path: str | os.PathLike, meta: dict) -> Path:
    """Masks as bool safetensors plus a ``.json`` sidecar with sorted keys (identical runs, identical bytes)."""
    from safetensors.torch import save_file

    from ..atomic import atomic_file, write_json

    with atomic_file(path) as tmp:
        save_file({k: masks[k].bool().contiguous() for k in sorted(masks)}, str(tmp), metadata={"format": "pt"})
    write_json(meta, sidecar_path(path))
    return Path(path)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``masks.safetensors`` -> ``masks.json``."""
    return Path(path).with_suffix(".json")


def load_masks(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Bool masks by adapter tensor key."""
    from ..artifacts import read_safetensors

    return {k: v.bool() for k, v in read_safetensors(path).items()}


# ----------------------------------------------------------------------------- stage entry


def calibration_examples(table, keep_all: bool = False) -> tuple[list[str], list[str]]:
    """(prompts, answers) of a scored reference table: its answers the judge rated safe (all with keep_all)."""
    keep = [i for i, refused in enumerate(table.column("refused").to_pylist()) if refused or keep_all]
    return ([table.column("prompt")[i].as_py() for i in keep], [table.column("response")[i].as_py() for i in keep])


def score_model(model, tok, prompts: Sequence[str], answers: Sequence[str], cfg: ScoreConfig):
    """Scores, masks and summary for a live PEFT model (seeded; no files written)."""
    from ..runtime import seed_everything

    seed_everything(cfg.seed)
    model.eval()
    batches = calibration_batches(tok, prompts, answers, batch_size=cfg.batch_size, max_length=cfg.max_length)
    scores = adapter_scores(model, batches, cfg)
    masks = masks_from_scores(scores, cfg)
    summary = mask_summary(masks, scores)
    summary["n_examples"] = len(prompts)
    summary["n_answer_tokens"] = int(sum(loss_positions(b["labels"]).sum() for b in batches))
    return scores, masks, summary


def save_scores(scores: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Entry scores as float32 safetensors keyed like the masks (the overlap analysis ranks neurons by them)."""
    from safetensors.torch import save_file

    from ..atomic import atomic_file

    with atomic_file(path) as tmp:
        save_file({k: scores[k].float().contiguous() for k in sorted(scores)}, str(tmp), metadata={"format": "pt"})
    return Path(path)


def score_adapter(adapter_dir: str | os.PathLike, prompts: Sequence[str], answers: Sequence[str],
                  out_path: str | os.PathLike, cfg: ScoreConfig, *, device: torch.device | None = None,
                  scores_path: str | os.PathLike | None = None) -> dict:
    """Score a LoRA adapter checkpoint on calibration answers and save its safety-critical masks (and scores)."""
    from .. import manifest
    from ..models import load_variant

    if not len(prompts):
        raise ValueError("no calibration examples")
    var = manifest.read(adapter_dir)
    if var.kind != "adapter":
        raise ValueError(f"{adapter_dir}: scores need a LoRA adapter checkpoint, got kind {var.kind!r}")
    model, tok = load_variant(adapter_dir, device=device, dtype="float32", merge=False, trainable=True)
    scores, masks, summary = score_model(model, tok, prompts, answers, cfg)
    meta = {"method": cfg.method, "keep_fraction": cfg.keep_fraction, "granularity": cfg.mask_granularity,
            "params": asdict(cfg), "model": var.model, "variant": var.name,
            "adapter": manifest.sha256_path(Path(adapter_dir) / "adapter_model.safetensors"),
            "summary": summary}
    save_masks(masks, out_path, meta)
    if scores_path is not None:
        save_scores(scores, scores_path)
    return meta


def score_reference_file(reference: str | os.PathLike, calibration: str | os.PathLike, out_path: str | os.PathLike,
                         cfg: ScoreConfig, *, keep_all: bool = False,
                         scores_path: str | os.PathLike | None = None) -> dict:
    """The safety_masks stage: masks of the reference scored on its own judged-safe answers in one scored file."""
    from ..data import read_table

    table = read_table(calibration)
    prompts, answers = calibration_examples(table, keep_all=keep_all)
    if not prompts:
        raise ValueError(f"{calibration}: the judge rated none of the reference's answers safe, so there is no "
                         "calibration data; use more nlsr.calibration prompts or nlsr.calibration_keep: all")
    print(f"calibration: {len(prompts)} of {table.num_rows} answers judged safe")
    return score_adapter(reference, prompts, answers, out_path, cfg, scores_path=scores_path)
