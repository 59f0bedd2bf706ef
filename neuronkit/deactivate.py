"""Deactivation (SN-Tune paper; docs/methods.md, B2): answers of a model with a neuron set zeroed, against a random
control."""

from __future__ import annotations

from pathlib import Path

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


def deactivation_perplexity_file(ckpt, index_path, text_parquet, out_json, *, seed: int = 0) -> dict:
    """Perplexity of benign text intact, with the safety neurons zeroed and with the random control zeroed.

    The refusal judge counts gibberish as compliance, so a harmful-score rise needs this to tell "safety broke"
    from "the model broke".
    """
    from .data import read_table
    from .perplexity import perplexity
    from .models import load_variant
    from .neurons import NeuronIndex
    from .atomic import write_json

    model, tok = load_variant(ckpt)
    index = NeuronIndex.read(index_path)
    index.check_fits(model.config, origin=str(index_path))
    texts = read_table(text_parquet).column("prompt").to_pylist()
    out = {"text": Path(text_parquet).stem, "intact": perplexity(model, tok, texts)}
    for selection, chosen in (("safety", index), ("random", index.random_like(seed))):
        with deactivated(model, chosen):
            out[selection] = {**perplexity(model, tok, texts), "neurons": len(chosen)}
    write_json(out, out_json)
    return out
