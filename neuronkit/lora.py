"""LoRA adapter files, read in one place: tensors and config, module names, factor keys and the delta scale (and
an IA3 adapter's scales, which fused patching applies).

Everything reads ``adapter_model.safetensors`` + ``adapter_config.json`` (no model is loaded, no pickle).

- a *module* is one adapted projection (layer x projection), named as in the adapter file without the factor
  suffix, e.g. ``base_model.model.model.layers.3.mlp.down_proj``;
- its LoRA delta is ``s * B @ A``; the rank r is the factor's own shape (so ``rank_pattern`` is honoured) and
  ``s = alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``), with alpha from ``alpha_pattern`` where a key matches
  the module, as peft does.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Mapping

import torch

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
_A, _B = ".lora_A.weight", ".lora_B.weight"
_LAYER = re.compile(r"\.layers\.(\d+)\.")
PEFT_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter directory cannot be used for EXPO or realignment."""


# ----------------------------------------------------------------------------- adapter files


def read_adapter(adapter_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The LoRA tensors and adapter config of a PEFT directory, checked to be plain LoRA."""
    from .artifacts import read_safetensors

    d = Path(adapter_dir)
    if not (d / WEIGHTS).is_file() or not (d / CONFIG).is_file():
        raise AdapterError(f"{d}: expected {WEIGHTS} and {CONFIG} (a PEFT LoRA adapter saved with safetensors)")
    config = json.loads((d / CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{d}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise AdapterError(f"{d}: DoRA adapters are not supported (their delta is not linear in lora_B)")
    if config.get("modules_to_save"):
        raise AdapterError(f"{d}: modules_to_save (full-weight copies) are not supported")
    tensors = read_safetensors(d / WEIGHTS)
    if not lora_modules(tensors):
        raise AdapterError(f"{d}: no lora_A/lora_B weight pairs in {WEIGHTS}")
    return tensors, config


def peft_type(adapter_dir: str | os.PathLike) -> str:
    """The adapter's ``peft_type`` (LORA, IA3, ...) from its config, or an error naming the missing file."""
    config = Path(adapter_dir) / CONFIG
    if not config.is_file():
        raise AdapterError(f"{adapter_dir}: expected {CONFIG} (a PEFT adapter directory)")
    return str(json.loads(config.read_text()).get("peft_type", "LORA"))


def ia3_scales(adapter_dir: str | os.PathLike) -> dict[str, tuple[torch.Tensor, bool]]:
    """``module path in the base model -> (scale vector, scales the input?)`` of an IA3 adapter: a feedforward
    module's input is scaled (down_proj: the MLP neurons), any other module's output, as peft computes them."""
    from .artifacts import read_safetensors

    d = Path(adapter_dir)
    if peft_type(d) != "IA3" or not (d / WEIGHTS).is_file():
        raise AdapterError(f"{d}: expected an IA3 adapter ({CONFIG} with peft_type IA3, and {WEIGHTS})")
    feedforward = json.loads((d / CONFIG).read_text()).get("feedforward_modules") or []
    out = {}
    for key, tensor in read_safetensors(d / WEIGHTS).items():
        if key.endswith(".ia3_l"):
            module = key[: -len(".ia3_l")]
            on_input = (re.fullmatch(feedforward, module) is not None if isinstance(feedforward, str)
                        else any(module == f or module.endswith("." + f) for f in feedforward))
            out[module.removeprefix(PEFT_PREFIX)] = (tensor.reshape(-1), on_input)
    if not out:
        raise AdapterError(f"{d}: no ia3_l scales in {WEIGHTS}")
    return dict(sorted(out.items(), key=lambda kv: _natural_key(kv[0])))


def write_adapter(out_dir: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  config_src: str | os.PathLike) -> Path:
    """A PEFT directory's files: the tensors as safetensors and the config copied byte for byte (callers write into
    an ``atomic.atomic_dir``)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: tensors[k].contiguous() for k in sorted(tensors)}, str(out / WEIGHTS), metadata={"format": "pt"})
    shutil.copyfile(Path(config_src) / CONFIG, out / CONFIG)
    return out


def _natural_key(name: str) -> list:
    """layers.2 before layers.10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def lora_modules(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Module names that have both LoRA factors, in natural (layer) order."""
    names = [k[: -len(_A)] for k in tensors if k.endswith(_A) and k[: -len(_A)] + _B in tensors]
    return sorted(names, key=_natural_key)


def factor_keys(module: str) -> tuple[str, str]:
    """Adapter-file keys of a module's (lora_A, lora_B) weights."""
    return module + _A, module + _B


def layer_of(module: str) -> int | None:
    """Decoder layer index of a module name, or None outside the layer stack."""
    match = _LAYER.search(module + ".")
    return int(match.group(1)) if match else None


def _pattern_value(patterns: Mapping[str, float], module: str, default: float) -> float:
    """peft's rank/alpha pattern lookup: a key matches the end of the dotted module name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scale(config: Mapping, module: str, r: int) -> float:
    """The factor s in delta = s * B @ A: alpha / r, or alpha / sqrt(r) with use_rslora."""
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def lora_factors(adapter_dir: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``module path in the base model -> (A, B, scale)`` of a plain LoRA adapter (no DoRA, bias or fan-in-fan-out).

    The path drops peft's ``base_model.model.`` prefix, so it names the module of the unwrapped model.
    """
    tensors, config = read_adapter(adapter_dir)
    if config.get("bias", "none") != "none" or config.get("fan_in_fan_out"):
        raise AdapterError(f"{adapter_dir}: a LoRA bias or fan_in_fan_out is not supported")
    out = {}
    for module in lora_modules(tensors):
        a, b = (tensors[k] for k in factor_keys(module))
        out[module.removeprefix(PEFT_PREFIX)] = (a, b, lora_scale(config, module, a.shape[0]))
    return out
