"""Where each decoder family keeps its layers, MLP and attention projections: one row per family.

Adding a model family is adding a row to ``ARCHITECTURES``; nothing else in neuronkit names
module paths. The MLP neuron is the input of ``down_proj``: ``act(gate(x)) * up(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the workflow reads this table when it loads, without torch
    import torch


class UnsupportedArchitectureError(ValueError):
    """The model's family is not in the architecture table."""


@dataclass(frozen=True)
class ArchSpec:
    """Module names of one decoder family (dotted paths relative to the causal-LM model)."""

    decoder: str = "model"
    layers: str = "model.layers"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
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


MODULES = ("mlp", "q", "k", "v", "o")


def head_dim(config) -> int:
    """Per-head width: the config's ``head_dim`` when set, else hidden / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def site_sizes(config) -> dict[str, int]:
    """Neurons per layer of each site: MLP units and the q/k/v/o projection dimensions."""
    check_supported(config)
    d = head_dim(config)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return {
        "mlp": config.intermediate_size,
        "q": config.num_attention_heads * d,
        "k": kv_heads * d,
        "v": kv_heads * d,
        "o": config.num_attention_heads * d,
    }


def model_shape(config) -> dict:
    """What a neuron index must match to be applied to a model (an unknown family is refused first)."""
    check_supported(config)
    return {"model_type": config.model_type, "num_layers": config.num_hidden_layers, "sites": site_sizes(config)}


def submodule(model: torch.nn.Module, part: str) -> torch.nn.Module:
    """A named top-level part (decoder, final_norm, lm_head) of a causal LM."""
    base = _unwrap(model)
    return base.get_submodule(getattr(check_supported(base.config), part))


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
