"""NLSR realignment on LoRA adapter files: EXPO reference, module similarity, selection,
transplant (docs/methods.md, C3 and C5).

Everything here works on adapter files read by :mod:`neuronkit.lora` (modules, factor keys, the delta scale; no
model is loaded). The aligned, reference and attacked adapters share their LoRA modules and shapes, because the
attack continues training the aligned adapter and EXPO only rescales it.

Conventions:

- masks (from :mod:`neuronkit.scores.adapter_scores`) are per factor tensor (``lora_A.weight`` and
  ``lora_B.weight``) and mark the safety-critical entries;
- similarity (default ``"delta"``, as the public NLSR code): cosine between
  ``s_ft (B_ft*M_B)(A_ft*M_A)`` and ``s_ref (B_ref*M_B)(A_ref*M_A)``, i.e. the deltas rebuilt from
  the safety-critical factor entries only. ``"factors"`` compares the masked factor entries
  themselves (``[A*M_A, B*M_B]`` concatenated). Cosine is 1 when both sides are zero and 0 when one is;
- transplant: ``W <- W_ft * (1 - M) + W_ref * M`` on both factors of the selected modules, done with
  ``torch.where`` so untouched entries stay bit-identical.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import manifest
from .atomic import atomic_dir, write_json
from .lora import WEIGHTS, AdapterError, factor_keys, layer_of, lora_modules, lora_scale, read_adapter, write_adapter

SUMMARY = "realign.json"
EXPO_MODES = ("exact", "legacy_both_factors")
MODES = ("adaptive", "threshold", "layer")
ORDERINGS = ("low_similarity_first", "high_similarity_first")
SIMILARITIES = ("delta", "factors")


def _relative_parent(child_dir: str | os.PathLike, parent_rel: str, out_dir: str | os.PathLike) -> str:
    """Re-express a parent path (relative to child_dir) relative to out_dir."""
    parent = os.path.normpath(os.path.join(os.path.abspath(child_dir), parent_rel))
    return os.path.relpath(parent, os.path.abspath(out_dir))


def _read_adapter_variant(ckpt: str | os.PathLike, role: str) -> manifest.Variant:
    """variant.json of an adapter checkpoint, with a clear error for any other kind."""
    var = manifest.read(ckpt)
    if var.kind != "adapter":
        raise AdapterError(f"{role} {ckpt}: expected an adapter checkpoint, got kind {var.kind!r}")
    return var


# ----------------------------------------------------------------------------- EXPO (C3)


def expo_factors(alpha: float, mode: str) -> tuple[float, float]:
    """(factor on lora_A, factor on lora_B): exact = delta * (1 + alpha); legacy = delta * (2 alpha)^2."""
    if mode not in EXPO_MODES:
        raise ValueError(f"expo mode must be one of {EXPO_MODES}, got {mode!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"expo alpha must be a finite number >= 0, got {alpha!r}")
    return (1.0, 1.0 + alpha) if mode == "exact" else (2.0 * alpha, 2.0 * alpha)


def expo_tensors(tensors: Mapping[str, torch.Tensor], alpha: float = 0.9,
                 mode: str = "exact") -> dict[str, torch.Tensor]:
    """theta_ref = theta_aligned + alpha (theta_aligned - theta_sft) on the aligned-over-SFT LoRA delta.

    Every ``lora_B`` tensor (weight and bias, embeddings' ``lora_embedding_B`` too) carries the
    delta linearly, so scaling it by ``1 + alpha`` is exact whatever the LoRA scaling (rsLoRA,
    rank/alpha patterns). The legacy mode scales both factors by ``2 alpha`` as the public code did.
    """
    fa, fb = expo_factors(alpha, mode)
    out = {}
    for key, t in tensors.items():
        is_b = ".lora_B." in key or ".lora_embedding_B" in key
        is_a = ".lora_A." in key or ".lora_embedding_A" in key
        if not (is_a or is_b):
            raise AdapterError(f"expo: tensor {key!r} is not a LoRA factor; cannot extrapolate it")
        factor = fb if is_b else fa
        out[key] = t if factor == 1.0 else (t.double() * factor).to(t.dtype)
    return out


def expo(aligned_dir: str | os.PathLike, out_dir: str | os.PathLike, *, alpha: float = 0.9, mode: str = "exact",
         name: str = "reference") -> Path:
    """Write the EXPO safety reference adapter (same parent as the aligned adapter) with its variant.json."""
    expo_factors(alpha, mode)  # validate before reading or writing anything
    var = _read_adapter_variant(aligned_dir, "aligned")
    tensors, _ = read_adapter(aligned_dir)
    ref = expo_tensors(tensors, alpha, mode)
    out = Path(out_dir)
    fa, fb = expo_factors(alpha, mode)
    with atomic_dir(out) as tmp:
        write_adapter(tmp, ref, aligned_dir)
        manifest.write(tmp, manifest.Variant(
            name=name, model=var.model, kind="adapter", parent=_relative_parent(aligned_dir, var.parent, out),
            method="expo", params={"alpha": alpha, "mode": mode, "delta_factor": fa * fb,
                                   "aligned_method": var.method},
            inputs=manifest.hash_inputs({"aligned": Path(aligned_dir) / WEIGHTS}),
        ))
    return out


# ----------------------------------------------------------------------------- config (C5)


@dataclass(frozen=True)
class RealignConfig:
    """Which modules of the attacked adapter get safety-critical entries back from the reference."""

    mode: str = "adaptive"                   # adaptive | threshold | layer
    rate: float = 0.5                        # adaptive: mean patch probability
    epsilon: float = 0.2                     # adaptive: probabilities span [rate - eps, rate + eps]
    ordering: str = "low_similarity_first"   # paper: less similar -> more likely; the other reproduces the public code
    tau: float = 0.5                         # threshold: patch when similarity < tau
    layers: tuple[int, ...] = ()             # layer: copy whole modules of these decoder layers
    similarity: str = "delta"                # delta | factors (see module docstring)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("ordering", self.ordering, ORDERINGS)
        _check_choice("similarity", self.similarity, SIMILARITIES)
        if not (0.0 <= self.epsilon and 0.0 <= self.rate - self.epsilon and self.rate + self.epsilon <= 1.0):
            raise ValueError(f"need 0 <= epsilon and 0 <= rate - epsilon <= rate + epsilon <= 1, "
                             f"got rate={self.rate}, epsilon={self.epsilon}")
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau is a cosine similarity threshold in [-1, 1], got {self.tau}")
        if any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in self.layers):
            raise ValueError(f"layers must be non-negative layer indices, got {self.layers!r}")
        if self.mode == "layer" and not self.layers:
            raise ValueError("mode 'layer' needs a non-empty layers tuple")
        if self.mode != "layer" and self.layers:
            raise ValueError(f"layers is only used by mode 'layer', not {self.mode!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    """A clear error for an unknown option."""
    if value not in choices:
        raise ValueError(f"realign {field} must be one of {tuple(choices)}, got {value!r}")


# ----------------------------------------------------------------------------- similarity + selection


def _cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Cosine in float64; 1 when both are zero, 0 when exactly one is."""
    x, y = x.double().flatten(), y.double().flatten()
    nx, ny = x.norm(), y.norm()
    if nx == 0 and ny == 0:
        return 1.0
    if nx == 0 or ny == 0:
        return 0.0
    return float((x @ y) / (nx * ny))


def module_similarity(ft: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
                      masks: Mapping[str, torch.Tensor] | None, *, kind: str = "delta",
                      ft_config: Mapping | None = None, ref_config: Mapping | None = None) -> dict[str, float]:
    """Cosine similarity per module between attacked and reference, restricted to the masks."""
    _check_choice("similarity", kind, SIMILARITIES)
    sims = {}
    for module in lora_modules(ref):
        ka, kb = factor_keys(module)
        ma, mb = (masks[ka], masks[kb]) if masks is not None else (None, None)
        fa, fb, ra, rb = (_apply(t[k], m) for t, k, m in ((ft, ka, ma), (ft, kb, mb), (ref, ka, ma), (ref, kb, mb)))
        if kind == "factors":
            sims[module] = _cosine(torch.cat([fa.flatten(), fb.flatten()]), torch.cat([ra.flatten(), rb.flatten()]))
        else:
            s_ft = lora_scale(ft_config, module, fa.shape[0]) if ft_config else 1.0
            s_ref = lora_scale(ref_config, module, ra.shape[0]) if ref_config else 1.0
            sims[module] = _cosine(s_ft * (fb @ fa), s_ref * (rb @ ra))
    return sims


def _apply(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The tensor in float64 with non-critical entries zeroed."""
    t = t.double()
    return t if mask is None else t * mask.to(torch.float64)


def patch_probabilities(sims: Mapping[str, float], rate: float = 0.5, epsilon: float = 0.2,
                        ordering: str = "low_similarity_first") -> dict[str, float]:
    """Linear in rank: the first-ranked module gets rate + eps, the last rate - eps (ties keep module order)."""
    _check_choice("ordering", ordering, ORDERINGS)
    names = list(sims)
    n = len(names)
    if n == 0:
        return {}
    values = torch.tensor([sims[m] for m in names], dtype=torch.float64)
    order = torch.argsort(values, descending=ordering == "high_similarity_first", stable=True)
    position = torch.empty(n, dtype=torch.float64)
    position[order] = torch.arange(n, dtype=torch.float64)
    probs = torch.full((n,), rate, dtype=torch.float64) if n == 1 else rate + epsilon - 2 * epsilon * position / (n - 1)
    return {m: float(p) for m, p in zip(names, probs.clamp(0.0, 1.0))}


def bernoulli_select(probs: Mapping[str, float], seed: int) -> list[str]:
    """Seeded draws in module order: the same seed and modules give the same selection."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(len(probs), generator=gen, dtype=torch.float64)
    return [m for m, x in zip(probs, u) if float(x) < probs[m]]


def select_modules(sims: Mapping[str, float], cfg: RealignConfig) -> tuple[list[str], dict[str, float]]:
    """(selected modules, patch probability per module) for the configured mode."""
    if cfg.mode == "adaptive":
        probs = patch_probabilities(sims, cfg.rate, cfg.epsilon, cfg.ordering)
        return bernoulli_select(probs, cfg.seed), probs
    if cfg.mode == "threshold":
        probs = {m: float(s < cfg.tau) for m, s in sims.items()}
    else:
        wanted = set(cfg.layers)
        probs = {m: float(layer_of(m) in wanted) for m in sims}
    return [m for m, p in probs.items() if p == 1.0], probs


# ----------------------------------------------------------------------------- transplant


def transplant(ft: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
               masks: Mapping[str, torch.Tensor] | None, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """W <- W_ft (1 - M) + W_ref M on both factors of the selected modules; masks=None copies whole modules."""
    out = dict(ft)
    for module in modules:
        keys = factor_keys(module) if masks is not None else [k for k in ref if k.startswith(module + ".")]
        for key in keys:
            mask = masks[key] if masks is not None else torch.ones_like(ref[key], dtype=torch.bool)
            out[key] = torch.where(mask.bool(), ref[key].to(ft[key].dtype), ft[key])
    return out


def check_compatible(ft: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
                     masks: Mapping[str, torch.Tensor] | None) -> None:
    """Same tensors and shapes in attacked and reference; masks cover every LoRA factor with its shape."""
    if set(ft) != set(ref):
        diff = sorted(set(ft) ^ set(ref))[:5]
        raise AdapterError(f"attacked and reference adapters hold different tensors (e.g. {diff}); "
                           "the attack must continue training the aligned adapter")
    bad = [k for k in ft if ft[k].shape != ref[k].shape]
    if bad:
        raise AdapterError(f"attacked and reference shapes differ for {bad[:5]}")
    if masks is None:
        return
    for module in lora_modules(ref):
        for key in factor_keys(module):
            if key not in masks:
                raise AdapterError(f"the mask file has no entry for {key!r}: was it scored on another adapter?")
            if masks[key].shape != ref[key].shape:
                raise AdapterError(f"mask {key!r} has shape {tuple(masks[key].shape)}, "
                                   f"the adapter {tuple(ref[key].shape)}")


# ----------------------------------------------------------------------------- stage entry


def realign_tensors(ft: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
                    masks: Mapping[str, torch.Tensor] | None, cfg: RealignConfig, *,
                    ft_config: Mapping | None = None, ref_config: Mapping | None = None) -> tuple[dict, dict]:
    """(realigned tensors, summary) without touching disk."""
    check_compatible(ft, ref, masks)
    if masks is None and cfg.mode != "layer":
        raise AdapterError(f"mode {cfg.mode!r} needs safety-critical masks")
    sims = module_similarity(ft, ref, masks, kind=cfg.similarity, ft_config=ft_config, ref_config=ref_config)
    selected, probs = select_modules(sims, cfg)
    out = transplant(ft, ref, None if cfg.mode == "layer" else masks, selected)
    return out, _summary(sims, probs, selected, ft, out, cfg)


def _summary(sims, probs, selected, ft, out, cfg: RealignConfig) -> dict:
    """Per-module similarity, probability and selection, plus how many entries changed."""
    chosen = set(selected)
    changed = sum(int((out[k] != ft[k]).sum()) for k in ft)
    return {
        "config": asdict(cfg),
        "n_modules": len(sims), "n_selected": len(selected), "entries_changed": changed,
        "entries_total": sum(t.numel() for t in ft.values()),
        "modules": [{"module": m, "layer": layer_of(m), "similarity": sims[m], "probability": probs[m],
                     "selected": m in chosen} for m in sims],
    }


def realign(attacked_dir: str | os.PathLike, reference_dir: str | os.PathLike, out_dir: str | os.PathLike,
            cfg: RealignConfig, *, masks_path: str | os.PathLike | None = None, name: str = "nlsr") -> dict:
    """Write the realigned adapter (same parent as the attacked one), its variant.json and realign.json."""
    from .scores.adapter_scores import load_masks

    _read_adapter_variant(reference_dir, "reference")
    ft, ft_config = read_adapter(attacked_dir)
    ref, ref_config = read_adapter(reference_dir)
    masks = load_masks(masks_path) if masks_path is not None else None
    tensors, summary = realign_tensors(ft, ref, masks, cfg, ft_config=ft_config, ref_config=ref_config)
    named = {"attacked": Path(attacked_dir) / WEIGHTS, "reference": Path(reference_dir) / WEIGHTS}
    if masks_path is not None:
        named["masks"] = masks_path
    _write_realigned(attacked_dir, out_dir, tensors, summary, named, name=name, method="nlsr", params=asdict(cfg))
    return summary


def _write_realigned(attacked_dir, out_dir, tensors: Mapping[str, torch.Tensor], summary: dict,
                     named: Mapping[str, os.PathLike], *, name: str, method: str, params: dict) -> None:
    """The adapter (same parent as the attacked one), realign.json and variant.json, in one atomic folder."""
    var = _read_adapter_variant(attacked_dir, "attacked")
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        write_adapter(tmp, tensors, attacked_dir)
        write_json(summary, tmp / SUMMARY)
        manifest.write(tmp, manifest.Variant(
            name=name, model=var.model, kind="adapter", parent=_relative_parent(attacked_dir, var.parent, out),
            method=method, params=params, inputs=manifest.hash_inputs(named),
        ))


# ----------------------------------------------------------------------------- random-mask control


def random_masks_like(masks: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Masks with the same count of marked entries per tensor, at seeded uniformly random positions."""
    out = {}
    for i, key in enumerate(sorted(masks)):
        mask = masks[key].bool()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        chosen = torch.randperm(mask.numel(), generator=gen)[: int(mask.sum())]
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[chosen] = True
        out[key] = flat.view(mask.shape)
    return out


def selected_modules(realigned_dir: str | os.PathLike) -> list[str]:
    """The modules an NLSR run transplanted into (its realign.json), in module order."""
    from .artifacts import read_json

    summary = read_json(Path(realigned_dir) / SUMMARY)
    return [m["module"] for m in summary["modules"] if m["selected"]]


def random_control_tensors(ft: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
                           masks: Mapping[str, torch.Tensor], modules: Sequence[str], seed: int) -> tuple[dict, dict]:
    """(tensors, summary) of the control: NLSR's modules and per-tensor counts, random entries."""
    check_compatible(ft, ref, masks)
    unknown = sorted(set(modules) - set(lora_modules(ref)))
    if unknown:
        raise AdapterError(f"the NLSR run selected modules the adapters do not have: {unknown[:5]}")
    random = random_masks_like(masks, seed)
    out = transplant(ft, ref, random, modules)
    overlap = sum(int((random[k] & masks[k].bool()).sum()) for k in masks)
    summary = {"control": "random_masks", "seed": seed, "n_selected": len(modules), "modules_selected": list(modules),
               "entries_marked": sum(int(m.sum()) for m in random.values()), "entries_shared_with_nlsr": overlap,
               "entries_changed": sum(int((out[k] != ft[k]).sum()) for k in ft),
               "entries_total": sum(t.numel() for t in ft.values())}
    return out, summary


def realign_random_control(attacked_dir: str | os.PathLike, reference_dir: str | os.PathLike,
                           realigned_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                           masks_path: str | os.PathLike, seed: int, name: str) -> dict:
    """Write the control adapter: the NLSR run's modules get reference entries at random positions instead of the
    safety-critical ones (same count per tensor), so a gap to NLSR is the effect of which entries it restores."""
    from .scores.adapter_scores import load_masks

    _read_adapter_variant(reference_dir, "reference")
    ft, _ = read_adapter(attacked_dir)
    ref, _ = read_adapter(reference_dir)
    tensors, summary = random_control_tensors(ft, ref, load_masks(masks_path), selected_modules(realigned_dir), seed)
    named = {"attacked": Path(attacked_dir) / WEIGHTS, "reference": Path(reference_dir) / WEIGHTS,
             "masks": masks_path, "nlsr": Path(realigned_dir) / SUMMARY}
    _write_realigned(attacked_dir, out_dir, tensors, summary, named, name=name, method="nlsr_random_masks",
                     params={"seed": seed})
    return summary
