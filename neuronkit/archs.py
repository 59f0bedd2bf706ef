"""Where each decoder family keeps its layers, MLP and attention projections: one row per family.

Adding a model family is adding a row to ``ARCHITECTURES``; nothing else in neuronkit names
module paths. The MLP neuron is the input of ``down_proj``: ``act(gate(x)) * up(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class UnsupportedArchitectureError(ValueError):
    """The model's family is not in the architecture table."""


@dataclass(frozen=True)
class ArchSpec:
    """Module names of one decoder family (dotted paths relative to the causal-LM model)."""

    layers: str = "model.layers"
    mlp: str = "mlp"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    attn: str = "self_attn"
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"


_GATED_DECODER = ArchSpec()

# model_type (from config.json) -> module layout. All of these use a gated MLP.
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _GATED_DECODER,
    "mistral": _GATED_DECODER,
    "qwen2": _GATED_DECODER,
    "qwen3": _GATED_DECODER,
    "gemma": _GATED_DECODER,
    "gemma2": _GATED_DECODER,
}


def arch_for(model_type: str) -> ArchSpec:
    """Look up a family, failing early with the list of supported ones."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitectureError(
            f"unknown model architecture {model_type!r}: supported model_type values are {supported}. "
            "Add a row to neuronkit.archs.ARCHITECTURES to support a new decoder family."
        ) from None


def check_supported(config) -> ArchSpec:
    """Validate a transformers config (before any weights load)."""
    return arch_for(getattr(config, "model_type", None) or "<missing model_type>")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of decoder blocks of a causal LM (unwrapping PEFT wrappers)."""
    base = _unwrap(model)
    spec = check_supported(base.config)
    return base.get_submodule(spec.layers)


def mlp_module(model: torch.nn.Module, layer: int, part: str = "down") -> torch.nn.Module:
    """One MLP projection (gate/up/down) of a layer."""
    spec = check_supported(_unwrap(model).config)
    block = decoder_layers(model)[layer]
    return block.get_submodule(f"{spec.mlp}.{getattr(spec, part)}")


def attn_module(model: torch.nn.Module, layer: int, part: str) -> torch.nn.Module:
    """One attention projection (q/k/v/o) of a layer."""
    spec = check_supported(_unwrap(model).config)
    block = decoder_layers(model)[layer]
    return block.get_submodule(f"{spec.attn}.{getattr(spec, part)}")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The underlying transformers model of a PeftModel (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
