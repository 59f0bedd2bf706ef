"""Deactivation (SN-Tune paper; docs/methods.md, B2): answers of a model with a neuron set zeroed, against a random
control."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from .generate import GenerationConfig, generate_responses, write_generations
from .hooks import deactivated, on_sites

SELECTIONS = ("safety", "random", "magnitude")


@dataclass(frozen=True)
class ControlConfig:
    """How the controls are drawn (defaults: the schema's ``deactivation`` section): the seed, and for the
    magnitude-matched one the candidate window and the documents whose mean |activation| it matches (the detection
    documents, encoded as PLND encodes them)."""

    random_seed: int = 0
    magnitude_window: int = 8
    magnitude_docs: tuple[str, ...] = ()
    chat: bool = True
    max_length: int = 256


def controls_from_params(deactivation: dict, plnd: dict, docs_parquet) -> ControlConfig:
    """The controls of a workflow job: the deactivation stage's seed and window, PLND's documents and encoding."""
    from .data import read_table

    docs = read_table(docs_parquet).column("prompt").to_pylist()[:plnd["n_docs"]]
    return ControlConfig(random_seed=deactivation["random_seed"], magnitude_window=deactivation["magnitude_window"],
                         magnitude_docs=tuple(docs), chat=plnd["chat"], max_length=plnd["max_length"])


def site_magnitudes(model: torch.nn.Module, tok, texts: Iterable[str], modules: Sequence[str], *,
                    chat: bool = True, max_length: int = 256) -> dict[str, torch.Tensor]:
    """Mean |activation| of every neuron of the given modules over all tokens of the documents: ``{module: [L, N]}``."""
    from .archs import decoder_layers, site_sizes, submodule
    from .scores.plnd import PLNDConfig, encode

    layers = len(decoder_layers(model))
    sizes = site_sizes(model.config)
    sums = {m: torch.zeros(layers, sizes[m], dtype=torch.float64) for m in modules}
    tokens = 0

    def accumulate(layer: int, module: str):
        def fn(t: torch.Tensor) -> None:
            sums[module][layer] += t.detach().abs().double().reshape(-1, t.shape[-1]).sum(0).cpu()
        return fn

    cfg = PLNDConfig(chat=chat, max_length=max_length, progress=False)
    device = next(model.parameters()).device
    fns = {(layer, m): accumulate(layer, m) for m in modules for layer in range(layers)}
    with torch.no_grad(), on_sites(model, fns):
        for text in texts:
            ids = encode(tok, text, cfg)
            submodule(model, "decoder")(input_ids=ids.to(device), use_cache=False)  # the sites only: no LM head
            tokens += ids.shape[1]
    if not tokens:
        raise ValueError("site_magnitudes: no documents given")
    return {m: (s / tokens).float() for m, s in sums.items()}


def control_selection(model, tok, index, selection: str, cfg: ControlConfig):
    """The neurons a deactivation row zeroes: the index itself, its equal-count random control, or its
    magnitude-matched control."""
    if selection not in SELECTIONS:
        raise ValueError(f"deactivation selection {selection!r} is not one of {'|'.join(SELECTIONS)}")
    if selection == "safety":
        return index
    if selection == "random":
        return index.random_like(cfg.random_seed)
    if not cfg.magnitude_docs:
        raise ValueError("deactivation: the magnitude-matched control needs documents to measure magnitudes on")
    modules = sorted(set(index.module.tolist()))
    magnitude = site_magnitudes(model, tok, cfg.magnitude_docs, modules, chat=cfg.chat, max_length=cfg.max_length)
    return index.magnitude_matched_like(magnitude, cfg.random_seed, cfg.magnitude_window)


def control_index_file(ckpt, index_path, out_path, selection: str, controls: ControlConfig = ControlConfig()) -> dict:
    """Write a control's neurons as an index file beside the safety set: drawn once per model, so every deactivation
    job zeroes the same ones, and a researcher can read which they were."""
    from .neurons import NeuronIndex

    if selection not in SELECTIONS or selection == "safety":
        raise ValueError(f"deactivation control {selection!r} is not one of {'|'.join(SELECTIONS[1:])}")
    model = tok = None
    if selection == "magnitude":  # only the matched control measures activations
        from .models import load_variant

        model, tok = load_variant(ckpt)
        index = _read_fitting_index(model, index_path)
    else:
        index = NeuronIndex.read(index_path)
    chosen = control_selection(model, tok, index, selection, controls)
    chosen.write(out_path)
    return {"selection": selection, "neurons": len(chosen), "per_layer": chosen.per_layer_counts()}


def _read_fitting_index(model, index_path):
    """The neuron index at index_path, refused with its path when it was built for another model shape."""
    from .neurons import NeuronIndex

    index = NeuronIndex.read(index_path)
    index.check_fits(model.config, origin=str(index_path))
    return index


def deactivate_generate_file(ckpt, index_path, prompts_parquet, out_parquet, gen_cfg: GenerationConfig, *,
                             selection: str) -> dict:
    """Generate with the neurons of ``index_path`` zeroed: the safety set (``selection="safety"``) or one of its
    controls (``random``, ``magnitude``; written by :func:`control_index_file`); the selection names the rows."""
    from .data import read_table
    from .models import load_variant

    if selection not in SELECTIONS:
        raise ValueError(f"deactivation selection {selection!r} is not one of {'|'.join(SELECTIONS)}")
    model, tok = load_variant(ckpt)
    chosen = _read_fitting_index(model, index_path)
    table = read_table(prompts_parquet)
    with deactivated(model, chosen):
        responses = generate_responses(model, tok, table.column("prompt").to_pylist(), gen_cfg,
                                       desc=f"deactivate {selection} ({len(chosen)})")
    write_generations(table, responses, out_parquet, variant=f"deact_{selection}",
                      intervention=f"zero:{selection}:k={len(chosen)}")
    return {"neurons": len(chosen), "per_layer": chosen.per_layer_counts()}


def deactivation_perplexity_file(ckpt, indices: Mapping[str, str | Path], text_parquet, out_json) -> dict:
    """Perplexity of benign text intact and with each selection's neurons zeroed (``{selection: index path}``: the
    safety set and its controls).

    The refusal judge counts gibberish as compliance, so a harmful-score rise needs this to tell "safety broke"
    from "the model broke".
    """
    from .atomic import write_json
    from .data import read_table
    from .models import load_variant
    from .perplexity import perplexity

    unknown = sorted(set(indices) - set(SELECTIONS))
    if unknown:
        raise ValueError(f"deactivation selections {unknown} are not among {'|'.join(SELECTIONS)}")
    model, tok = load_variant(ckpt)
    chosen = {selection: _read_fitting_index(model, path) for selection, path in indices.items()}
    texts = read_table(text_parquet).column("prompt").to_pylist()
    out = {"text": Path(text_parquet).stem, "intact": perplexity(model, tok, texts)}
    for selection, index in chosen.items():
        with deactivated(model, index):
            out[selection] = {**perplexity(model, tok, texts), "neurons": len(index)}
    write_json(out, out_json)
    return out
