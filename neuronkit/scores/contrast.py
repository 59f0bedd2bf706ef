"""Generation-time activation contrasting (Finding Safety Neurons; docs/methods.md, A2).

The generator model answers each prompt greedily; the aligned model A and the unaligned model U
then run teacher-forced on the SAME token ids (no decode and re-encode). At the selected tokens
(``completion``, ``prompt`` or ``prompt_last``) the MLP neuron activations of both models stream
into :class:`~neuronkit.stats.PairedStats`; the change score is the per-neuron RMS difference,
ranked globally over all layers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..archs import model_shape, site_sizes, submodule
from ..hooks import mlp_sites, on_sites
from ..models import chat_prompt
from ..neurons import NeuronIndex
from ..stats import PairedStats

TOKEN_TYPES = ("completion", "prompt", "prompt_last")


@dataclass(frozen=True)
class ContrastConfig:
    """How completions are made and which tokens are compared."""

    token_type: str = "completion"
    max_new_tokens: int = 32
    batch_size: int = 8
    exclude_last_layers: int = 1  # published: the last layer is not ranked
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.token_type not in TOKEN_TYPES:
            raise ValueError(f"contrast.token_type: {self.token_type!r} is not one of {TOKEN_TYPES}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.exclude_last_layers < 0:
            raise ValueError("contrast: max_new_tokens and batch_size must be >= 1, exclude_last_layers >= 0")


@dataclass(frozen=True)
class Sequence_:
    """One prompt's token ids and the generator's completion ids (up to and including EOS)."""

    prompt_ids: list[int]
    completion_ids: list[int]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate_sequences(model, tok, prompts: Sequence[str], cfg: ContrastConfig) -> list[Sequence_]:
    """Greedy completions kept as token ids, so both models later see exactly the same tokens."""
    texts = [chat_prompt(tok, p, cfg.system_prompt) for p in prompts]
    tok.padding_side = "left"
    eos = set(_eos_ids(model, tok))
    out: list[Sequence_] = []
    for start in tqdm(range(0, len(texts), cfg.batch_size), desc="contrast: generate", unit="batch"):
        enc = tok(texts[start:start + cfg.batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(_device(model))
        ids = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
        width = enc["input_ids"].shape[1]
        for row, mask in zip(ids.tolist(), enc["attention_mask"].tolist()):
            prompt = [t for t, m in zip(row[:width], mask) if m]
            out.append(Sequence_(prompt, _until_eos(row[width:], eos)))
    return out


def _eos_ids(model, tok) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    return [e for e in eos + [tok.eos_token_id] if e is not None]


def _until_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids


def batch_inputs(seqs: Sequence[Sequence_], pad_id: int, token_type: str, device) -> dict:
    """Left-padded ids, attention mask, generation-style position ids and the selected-token mask."""
    width = max(len(s.prompt_ids) + len(s.completion_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    select = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        full = s.prompt_ids + s.completion_ids
        off = width - len(full)
        ids[i, off:] = torch.tensor(full)
        attn[i, off:] = 1
        p_end = off + len(s.prompt_ids)
        if token_type == "completion":
            select[i, p_end:] = True
        elif token_type == "prompt":
            select[i, off:p_end] = True
        else:
            select[i, p_end - 1] = True
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device),
            "position_ids": position_ids.to(device), "select": select.to(device)}


@torch.no_grad()
def contrast_statistics(model_a, model_b, seqs: Sequence[Sequence_], pad_id: int, cfg: ContrastConfig) -> PairedStats:
    """Stream both models' MLP activations at the selected tokens into paired statistics."""
    layers = len(mlp_sites(model_a))
    stats = PairedStats.zeros(layers, site_sizes(model_a.config)["mlp"])
    for start in tqdm(range(0, len(seqs), cfg.batch_size), desc="contrast: activations", unit="batch"):
        batch = batch_inputs(seqs[start:start + cfg.batch_size], pad_id, cfg.token_type, _device(model_a))
        select = batch.pop("select")
        held: dict[int, torch.Tensor] = {}

        def keep(layer):
            def fn(h):
                held[layer] = h[select].float().cpu()
            return fn

        def fold(layer):
            def fn(h):
                stats.update(layer, held.pop(layer), h[select].float().cpu())
            return fn

        with on_sites(model_a, {(l, "mlp"): keep(l) for l in range(layers)}):
            submodule(model_a, "decoder")(**batch, use_cache=False)
        with on_sites(model_b, {(l, "mlp"): fold(l) for l in range(layers)}):
            submodule(model_b, "decoder")(**{k: v.to(_device(model_b)) for k, v in batch.items()}, use_cache=False)
    return stats


def contrast_index(stats: PairedStats, model_config, meta: dict, exclude_last_layers: int = 0) -> NeuronIndex:
    """Rank every MLP neuron by its RMS activation change."""
    meta = dict(meta, method="contrast", shape=model_shape(model_config), tokens=int(stats.count[0, 0].item()))
    return NeuronIndex.from_scores({"mlp": stats.rms_change()}, meta, exclude_last_layers=exclude_last_layers)


def contrast_files(aligned_ckpt: str | os.PathLike, unaligned_ckpt: str | os.PathLike, prompts_parquet,
                   cfg: ContrastConfig, *, generator: str, out_index, out_stats, meta: dict) -> NeuronIndex:
    """Workflow entry: generate with the generator, contrast A and U, write index and statistics."""
    from ..data import read_table
    from ..models import load_variant

    if generator not in ("aligned", "unaligned"):
        raise ValueError(f"contrast.generator: {generator!r} is not aligned|unaligned")
    model_a, tok = load_variant(aligned_ckpt)
    model_u, _ = load_variant(unaligned_ckpt)
    prompts = read_table(prompts_parquet).column("prompt").to_pylist()
    seqs = generate_sequences(model_u if generator == "unaligned" else model_a, tok, prompts, cfg)
    stats = contrast_statistics(model_a, model_u, seqs, tok.pad_token_id, cfg)
    stats.save(out_stats, metadata={"a": "aligned", "b": "unaligned", "token_type": cfg.token_type})
    index = contrast_index(stats, model_a.config, dict(meta, generator=generator, token_type=cfg.token_type,
                                                       prompts=len(prompts)), cfg.exclude_last_layers)
    index.write(out_index)
    return index
