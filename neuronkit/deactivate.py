"""Deactivation (SN-Tune paper, B2): answers of a model with a neuron set zeroed, against a random control."""

from __future__ import annotations

from .generate import GenerationConfig, generate_responses, write_generations
from .hooks import deactivated


def deactivate_generate_file(ckpt, index_path, prompts_parquet, out_parquet, gen_cfg: GenerationConfig, *,
                             selection: str, seed: int = 0) -> dict:
    """Generate with the index's neurons (``safety``) or random ones of equal per-layer, per-module counts zeroed."""
    from .data import read_table
    from .models import load_variant
    from .neurons import NeuronIndex

    model, tok = load_variant(ckpt)
    index = NeuronIndex.read(index_path)
    index.check_fits(model.config, origin=str(index_path))
    if selection not in ("safety", "random"):
        raise ValueError(f"deactivation selection {selection!r} is not safety|random")
    chosen = index if selection == "safety" else index.random_like(seed)
    table = read_table(prompts_parquet)
    with deactivated(model, chosen):
        responses = generate_responses(model, tok, table.column("prompt").to_pylist(), gen_cfg,
                                       desc=f"deactivate {selection} ({len(chosen)})")
    write_generations(table, responses, out_parquet, variant=f"deact_{selection}",
                      intervention=f"zero:{selection}:k={len(chosen)}")
    return {"neurons": len(chosen), "per_layer": chosen.per_layer_counts()}
