"""neuron2word: what an MLP neuron writes, read through the final norm and the unembedding (a logit lens)."""

from __future__ import annotations

import torch

from .archs import mlp_module, submodule


@torch.no_grad()
def neuron_tokens(model, tok, layer: int, neuron: int, top: int = 8) -> dict:
    """Top tokens promoted and suppressed by one neuron's ``down_proj`` column."""
    column = mlp_module(model, layer, "down").weight[:, neuron]
    normed = submodule(model, "final_norm")(column.unsqueeze(0))
    logits = submodule(model, "lm_head")(normed).squeeze(0).float()
    up, down = torch.topk(logits, top), torch.topk(-logits, top)
    decode = lambda ids: [tok.decode([int(i)]) for i in ids]  # noqa: E731
    return {"layer": layer, "neuron": neuron, "promotes": decode(up.indices), "suppresses": decode(down.indices)}


def neuron2word(model, tok, index, n: int = 20, top: int = 8) -> list[dict]:
    """The logit-lens words of the index's top ``n`` MLP neurons, with their rank and score."""
    mlp = index.only("mlp").top(n)
    return [dict(neuron_tokens(model, tok, l, i, top), rank=r, score=float(s))
            for r, (l, i, s) in enumerate(zip(mlp.layer.tolist(), mlp.neuron.tolist(), mlp.score.tolist()))]


def neurons_section(index_path, ckpt, *, n_words: int = 20, k: int | float = 0.05) -> dict:
    """Report section for a neuron index: its provenance, per-layer counts of the top k, and neuron2word."""
    from .models import load_variant
    from .neurons import NeuronIndex, resolve_k

    index = NeuronIndex.read(index_path)
    model, tok = load_variant(ckpt)
    index.check_fits(model.config, origin=str(index_path))
    top = index.top(resolve_k(k, index.total_sites))
    return {
        "method": index.meta.get("method"), "meta": index.meta, "neurons_ranked": len(index),
        "top_k": len(top), "top_fraction": round(len(top) / index.total_sites, 6),
        "top_per_layer": top.per_layer_counts(), "top_score_range": [float(top.score.min()), float(top.score.max())]
        if len(top) else None,
        "neuron2word": neuron2word(model, tok, index, n=n_words),
    }
