"""Neuron sites and tiny hook context managers (in the spirit of baukit's nethook).

A *site* is ``(layer, module)``; its tensor has the site's neurons in the last dimension:

- ``mlp``: the input of ``down_proj``, i.e. ``act(gate(x)) * up(x)`` (a forward pre-hook);
- ``q``, ``k``, ``v``: the outputs of the projections (forward hooks);
- ``o``: the input of ``o_proj``, i.e. the concatenated head outputs (a forward pre-hook).

Site names follow TransformerLens: ``blocks.{layer}.{module}``. Every context manager removes
its hooks on exit, exceptions included; nothing edits library sources.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping

import torch

from .archs import attn_module, decoder_layers, mlp_module

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]
Site = tuple[int, str]
HOOK_KINDS = ("pre", "pre_kw", "post", "post_kw")  # forward pre-hook / forward hook, with or without kwargs


@contextmanager
def hooked(registrations: Iterable[tuple[torch.nn.Module, str, Callable]]) -> Iterator[None]:
    """The one hook primitive: register ``(module, kind, fn)`` hooks on entry and remove exactly these handles on
    exit, exceptions included (every other hook context in neuronkit is built on it).

    >>> with hooked([(model.model.layers[0].mlp.down_proj, "pre", lambda mod, args: None)]):
    ...     model(ids)
    """
    handles = []
    try:
        for module, kind, fn in registrations:
            if kind not in HOOK_KINDS:
                raise ValueError(f"hook kind must be one of {HOOK_KINDS}, got {kind!r}")
            if kind.startswith("pre"):
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=kind == "pre_kw"))
            else:
                handles.append(module.register_forward_hook(fn, with_kwargs=kind == "post_kw"))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _site_target(model: torch.nn.Module, layer: int, module: str) -> tuple[torch.nn.Module, bool]:
    """The module to hook for a site and whether the site is its input (pre-hook)."""
    if module == "mlp":
        return mlp_module(model, layer, "down"), True
    if module in ("q", "k", "v"):
        return attn_module(model, layer, module), False
    if module == "o":
        return attn_module(model, layer, "o"), True
    raise ValueError(f"unknown site module {module!r}; expected mlp|q|k|v|o")


def _pre_hook(fn: SiteFn):
    def hook(_module, args):
        new = fn(args[0])
        return None if new is None else (new, *args[1:])
    return hook


def _post_hook(fn: SiteFn):
    def hook(_module, _args, output):
        return fn(output)
    return hook


@contextmanager
def on_sites(model: torch.nn.Module, fns: Mapping[Site, SiteFn]) -> Iterator[None]:
    """Run ``fn(site_tensor)`` at each site; a returned tensor replaces the site's value."""
    registrations = []
    for (layer, module), fn in fns.items():
        target, is_input = _site_target(model, layer, module)
        registrations.append((target, "pre", _pre_hook(fn)) if is_input else (target, "post", _post_hook(fn)))
    with hooked(registrations):
        yield


@contextmanager
def capture(model: torch.nn.Module, sites: list[Site], *, detach: bool = True) -> Iterator[dict[Site, torch.Tensor]]:
    """Record the latest value of each site during forwards inside the block."""
    store: dict[Site, torch.Tensor] = {}

    def recorder(site: Site) -> SiteFn:
        def record(t: torch.Tensor) -> None:
            store[site] = t.detach() if detach else t
        return record

    with on_sites(model, {site: recorder(site) for site in sites}):
        yield store


def mlp_sites(model: torch.nn.Module, layers: list[int] | None = None) -> list[Site]:
    """The MLP site of every layer (or of the given layers)."""
    n = len(decoder_layers(model))
    return [(layer, "mlp") for layer in (range(n) if layers is None else layers)]


def _zero(ids: torch.Tensor) -> SiteFn:
    def fn(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[..., ids.to(t.device)] = 0
        return t
    return fn


@contextmanager
def deactivated(model: torch.nn.Module, index) -> Iterator[None]:
    """Zero the index's neurons wherever they act (docs/methods.md, B2: deactivation, as hooks)."""
    fns: dict[Site, SiteFn] = {}
    for module in sorted(set(index.module.tolist())):
        for layer, ids in index.by_layer(module).items():
            fns[(layer, module)] = _zero(ids)
    with on_sites(model, fns):
        yield


def count_hooks(model: torch.nn.Module) -> int:
    """Forward and pre-forward hooks still registered anywhere in a model (for leak checks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
