"""Dynamic activation patching (Finding Safety Neurons; docs/methods.md, A3) and its static controls.

*Guided* patching: while the unaligned model U generates, the aligned model A runs on U's own
tokens with its own KV cache, and U's selected MLP neurons take A's activations at the same
positions (all prompt positions at the first step, the new token afterwards). It runs inside
HF ``generate``, so greedy, sampling and beam search all work (A's cache is reordered with U's).
A's cache is held here; U's is recognised by its type (``transformers.Cache``), not by the keyword
it arrives under, and the two are checked to hold the same number of tokens before and after every
forward, so a cache patching cannot follow raises ``PatchingError`` instead of silently resetting.

Two ways to run A:

- ``two_model``: A is a second model; a pre-hook on U's decoder runs A's decoder first.
- ``fused``: U and A share base weights and differ by LoRA adapters. One batched forward runs
  rows ``[U; A]`` over one copy of the weights; A's rows add A's extra adapter deltas, and U's
  rows copy A's activations at each patched layer.

Static controls need no A: replace the neurons with A's mean, with zero, or with noise drawn
from A's per-neuron mean and std. Every context manager removes its hooks on exit.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch

from .archs import decoder_layers, submodule
from .hooks import hooked, on_sites

PATCH_VALUES = ("guided", "mean", "zero", "noise")
PATCH_MODES = ("two_model", "fused")

Neurons = Mapping[int, torch.Tensor]  # layer -> sorted neuron ids (NeuronIndex.by_layer("mlp"))


class PatchingError(RuntimeError):
    """Patching cannot run as asked (unsupported decoding, out-of-sync caches, incompatible variants)."""


class _GuideDone(Exception):
    """Stops the guide's forward after the last layer that is patched."""


def _kwarg(args: tuple, kwargs: dict, name: str, position: int):
    return kwargs[name] if name in kwargs else (args[position] if len(args) > position else None)


def _copy_from(source: Mapping[int, torch.Tensor], layer: int, ids: torch.Tensor):
    """Site fn: U's neurons ``ids`` take the guide's value held for this layer."""
    def fn(h: torch.Tensor) -> torch.Tensor:
        guide = source[layer]
        if guide.shape[:-1] != h.shape[:-1]:
            raise PatchingError(f"layer {layer}: guide activations {tuple(guide.shape)} do not match {tuple(h.shape)}")
        h = h.clone()
        h[..., ids] = guide[..., ids].to(h.dtype)
        return h
    return fn


# The KV cache is found by its type (``transformers.Cache``), never by the keyword transformers
# happens to pass it under: that name changed (``past_key_values`` -> ``cache`` in 5.24), and a
# name lookup then silently reset the guide's cache at every step.


def _caches_in(values) -> list:
    from transformers import Cache

    found: list = []
    for value in values:
        if isinstance(value, Cache) and not any(value is seen for seen in found):
            found.append(value)
    return found


def _input_cache(args: tuple, kwargs: dict):
    """The KV cache a decoder forward received (by type), or None for a forward without one."""
    found = _caches_in((*args, *kwargs.values()))
    if len(found) > 1:
        raise PatchingError(f"the decoder received {len(found)} KV caches; patching cannot tell which one is U's")
    return found[0] if found else None


def _output_cache(output):
    """The KV cache a decoder forward returned (by type), or None."""
    found = _caches_in(output.values() if hasattr(output, "values") else ())
    return found[0] if len(found) == 1 else None


def cache_parameter(decoder: torch.nn.Module) -> str:
    """The name of the decoder's KV-cache parameter, read from its public signature (by annotation)."""
    import inspect
    import typing

    from transformers import Cache

    hints = typing.get_type_hints(decoder.forward)
    for name in inspect.signature(decoder.forward).parameters:
        hint = hints.get(name)
        if hint is Cache or Cache in typing.get_args(hint) or (isinstance(hint, type) and issubclass(hint, Cache)):
            return name
    raise PatchingError(f"{type(decoder).__name__}.forward takes no KV cache (no parameter annotated as Cache); "
                        "guided patching needs one to keep the guide in step with U")


def _with_cache(args: tuple, kwargs: dict, old, new, name: str) -> tuple[tuple, dict]:
    """U's decoder inputs with U's cache ``old`` replaced by ``new`` (added as ``name`` if U had none)."""
    args = tuple(new if v is old and old is not None else v for v in args)
    kwargs = {k: (new if v is old and old is not None else v) for k, v in kwargs.items()}
    if old is None:
        kwargs[name] = new
    return args, kwargs


@contextmanager
def guided_two_model(model_u, model_a, neurons: Neurons) -> Iterator[None]:
    """U's neurons take A's activations; A runs on U's decoder inputs with a KV cache of its own.

    The guide's cache lives here, in step with U's: a new one whenever U's cache is empty, and
    checked against U's length before and after every forward. Any mismatch raises PatchingError.
    """
    neurons = {int(l): ids.to(next(model_u.parameters()).device) for l, ids in neurons.items() if len(ids)}
    if not neurons:
        yield
        return
    last = max(neurons)
    held: dict[int, torch.Tensor] = {}
    state: dict = {"cache": None}
    dec_a, dec_u = submodule(model_a, "decoder"), submodule(model_u, "decoder")
    guide_cache_name = cache_parameter(dec_a)

    def run_guide(_module, args, kwargs):
        if _kwarg(args, kwargs, "input_ids", 0) is None:
            raise PatchingError("guided patching needs input_ids (inputs_embeds cannot be replayed on the guide)")
        past = _input_cache(args, kwargs)
        seen = past.get_seq_length() if past is not None else 0
        if seen == 0:
            from transformers import DynamicCache

            state["cache"] = DynamicCache(config=model_a.config)
        elif state["cache"] is None or state["cache"].get_seq_length() != seen:
            have = state["cache"].get_seq_length() if state["cache"] is not None else "no"
            raise PatchingError(f"guide cache holds {have} tokens but U's holds {seen}: "
                                "this decoding strategy edits U's cache in a way patching cannot follow")
        if past is not None:
            _sync_reorder(past, state)
        guide_args, guide_kwargs = _with_cache(args, kwargs, past, state["cache"], guide_cache_name)
        held.clear()
        try:
            dec_a(*guide_args, **guide_kwargs)
        except _GuideDone:
            pass

    def check_in_step(_module, _args, _kwargs, output):
        u_cache = _output_cache(output)
        if u_cache is not None and u_cache.get_seq_length() != state["cache"].get_seq_length():
            raise PatchingError(f"after this step U's cache holds {u_cache.get_seq_length()} tokens but the guide's "
                                f"holds {state['cache'].get_seq_length()}: the guide lost track of U's cache")
        return output

    def hold(layer):
        def fn(h):
            held[layer] = h.detach()
            if layer == last:
                raise _GuideDone
        return fn

    with ExitStack() as stack:
        stack.enter_context(on_sites(model_a, {(l, "mlp"): hold(l) for l in neurons}))
        stack.enter_context(on_sites(model_u, {(l, "mlp"): _copy_from(held, l, ids) for l, ids in neurons.items()}))
        stack.enter_context(hooked([(dec_u, "pre_kw", run_guide), (dec_u, "post_kw", check_in_step)]))
        yield


def _sync_reorder(past, state: dict) -> None:
    """Make beam-search reorders of U's cache reorder the guide's cache too (instance-level wrap)."""
    if getattr(past, "_neuronkit_guide_state", None) is state:
        return
    original = past.reorder_cache

    def reorder_both(beam_idx):
        original(beam_idx)
        state["cache"].reorder_cache(beam_idx)

    past.reorder_cache = reorder_both
    past._neuronkit_guide_state = state


@contextmanager
def static_patch(model_u, neurons: Neurons, value: str, *, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, seed: int = 0) -> Iterator[None]:
    """Controls without a guide: neurons set to A's mean, to zero, or to noise ~ N(mean_A, std_A)."""
    if value not in ("mean", "zero", "noise"):
        raise PatchingError(f"static patch value {value!r} is not mean|zero|noise")
    if value != "zero" and (mean is None or (value == "noise" and std is None)):
        raise PatchingError(f"patch value {value!r} needs the aligned model's activation statistics")
    gen = torch.Generator().manual_seed(seed)

    def setter(layer: int, ids: torch.Tensor):
        def fn(h):
            h = h.clone()
            if value == "zero":
                h[..., ids] = 0
            elif value == "mean":
                h[..., ids] = mean[layer, ids].to(h.dtype).to(h.device)
            else:
                noise = torch.randn((*h.shape[:-1], len(ids)), generator=gen, dtype=torch.float64)
                h[..., ids] = (mean[layer, ids] + std[layer, ids] * noise).to(h.dtype).to(h.device)
            return h
        return fn

    with on_sites(model_u, {(int(l), "mlp"): setter(int(l), ids) for l, ids in neurons.items() if len(ids)}):
        yield


# --------------------------------------------------------------------------------------- fused


def guide_adapter(adapter_dir: str | Path) -> tuple[str, dict]:
    """What A's rows add, per module: ``("LORA", path -> (A, B, scale))`` of a plain LoRA adapter (per-module alpha
    and rank patterns honoured) or ``("IA3", path -> (scale, on the input?))``."""
    from .lora import AdapterError, ia3_scales, lora_factors, peft_type

    try:
        kind = peft_type(adapter_dir)
        return kind, ia3_scales(adapter_dir) if kind == "IA3" else lora_factors(adapter_dir)
    except AdapterError as err:
        raise PatchingError(f"fused patching needs plain LoRA or IA3 adapters: {err}") from None


def adapter_chain(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint directories from the full model up to this variant."""
    from . import manifest

    chain = [Path(ckpt_dir).resolve()]
    while True:
        var = manifest.read(chain[-1])
        if var.kind != "adapter":
            return chain[::-1]
        chain.append((chain[-1] / var.parent).resolve())


def guide_adapters(u_ckpt: str | Path, a_ckpt: str | Path) -> list[Path]:
    """A's adapters on top of U, when U is an ancestor of A (what the fused mode needs)."""
    u_chain, a_chain = adapter_chain(u_ckpt), adapter_chain(a_ckpt)
    if a_chain[: len(u_chain)] != u_chain:
        raise PatchingError(f"fused patching needs the unaligned variant ({u_ckpt}) to be an ancestor of the "
                            f"aligned one ({a_ckpt}); use patching.mode: two_model")
    extra = a_chain[len(u_chain):]
    if not extra:
        raise PatchingError("fused patching: the aligned and unaligned variants are the same checkpoint")
    return extra


_FUSED_BEAMS = "fused patching does not support beam search (rows [U; A] share one cache); use patching.mode: two_model"


def _refuse_reorder(_beam_idx):
    raise PatchingError(_FUSED_BEAMS)


def _doubled(value, rows: int):
    """A per-row decoder input (ids, mask, positions: batch first, 2+ dims) repeated for rows [U; A]."""
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == rows:
        return torch.cat([value, value])
    return value


@contextmanager
def guided_fused(model_u, adapters: list[Path], neurons: Neurons) -> Iterator[None]:
    """One batched forward over rows [U; A]: A's rows add its adapter deltas, U's rows copy A's neurons."""
    if (getattr(model_u.generation_config, "num_beams", 1) or 1) > 1:
        raise PatchingError(_FUSED_BEAMS)
    device = next(model_u.parameters()).device
    guides = [guide_adapter(d) for d in adapters]
    state: dict = {"rows": None}
    neurons = {int(l): ids.to(device) for l, ids in neurons.items() if len(ids)}

    def double_rows(_module, args, kwargs):
        input_ids = _kwarg(args, kwargs, "input_ids", 0)
        if input_ids is None:
            raise PatchingError("fused patching needs input_ids")
        rows = input_ids.shape[0]
        state["rows"] = rows
        past = _input_cache(args, kwargs)
        if past is not None and not getattr(past, "_neuronkit_fused", False):
            past.reorder_cache = _refuse_reorder
            past._neuronkit_fused = True
        return tuple(_doubled(v, rows) for v in args), {k: _doubled(v, rows) for k, v in kwargs.items()}

    def keep_u_rows(_module, _args, output):
        output.last_hidden_state = output.last_hidden_state[: state["rows"]]
        return output

    def add_delta(a: torch.Tensor, b: torch.Tensor, scale: float):
        a, b = a.to(device), b.to(device)

        def hook(_module, args, output):
            rows = state["rows"]
            x = args[0][rows:]
            output = output.clone()
            output[rows:] += ((x.to(a.dtype) @ a.T) @ b.T * scale).to(output.dtype)
            return output
        return hook

    def scale_rows(scale: torch.Tensor, on_input: bool):
        """An IA3 scale on A's rows only: of the module's input (a pre-hook, before the site's own) or output."""
        scale = scale.to(device)

        def scaled(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            t[state["rows"]:] *= scale.to(t.dtype)
            return t
        if on_input:
            return "pre", lambda _module, args: (scaled(args[0]), *args[1:])
        return "post", lambda _module, _args, output: scaled(output)

    def row_hooks(kind: str, modules: dict):
        for path, value in modules.items():
            module = model_u.get_submodule(path)
            if kind == "IA3":
                yield (module, *scale_rows(*value))
            else:
                yield module, "post", add_delta(*value)

    def copy_guide_rows(layer: int, ids: torch.Tensor):
        def fn(h):
            rows = state["rows"]
            h = h.clone()
            h[:rows, ..., ids] = h[rows:, ..., ids]
            return h
        return fn

    decoder = submodule(model_u, "decoder")
    with ExitStack() as stack:
        # A's own adapters first: an IA3 scale on down_proj's input must act before the site copies A's neurons
        stack.enter_context(hooked(hook for kind, modules in guides for hook in row_hooks(kind, modules)))
        stack.enter_context(on_sites(model_u, {(l, "mlp"): copy_guide_rows(l, ids) for l, ids in neurons.items()}))
        stack.enter_context(hooked([(decoder, "pre_kw", double_rows), (decoder, "post", keep_u_rows)]))
        yield


def first_divergence(ids_a: Sequence[int], scores_a: torch.Tensor, ids_b: Sequence[int], scores_b: torch.Tensor,
                     tol: float = 1e-3) -> dict | None:
    """Where two runs' greedy answers to one prompt part (None if never), with each run's margin for its own token
    over the other's there (``scores_*``: ``[steps, vocab]`` of that row); a tie when both margins are below tol."""
    step = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), None)
    if step is None:
        if len(ids_a) == len(ids_b):
            return None
        return {"step": min(len(ids_a), len(ids_b)), "margin_a": None, "margin_b": None, "tie": False}
    tok_a, tok_b = ids_a[step], ids_b[step]
    margin_a = float(scores_a[step, tok_a] - scores_a[step, tok_b])
    margin_b = float(scores_b[step, tok_b] - scores_b[step, tok_a])
    return {"step": step, "margin_a": margin_a, "margin_b": margin_b, "tie": max(margin_a, margin_b) < tol}


def compare_runs(ids_a: Sequence[Sequence[int]], scores_a: torch.Tensor, ids_b: Sequence[Sequence[int]],
                 scores_b: torch.Tensor, tol: float = 1e-3) -> dict:
    """Identical answers, floating-point ties and real differences between two runs on the same prompts
    (``scores_*``: ``[steps, rows, vocab]`` as ``generate.greedy_steps`` returns them)."""
    if len(ids_a) != len(ids_b):
        raise ValueError(f"compare_runs: {len(ids_a)} answers against {len(ids_b)}")
    parts = [first_divergence(a, scores_a[:, row], b, scores_b[:, row], tol)
             for row, (a, b) in enumerate(zip(ids_a, ids_b))]
    ties = [p for p in parts if p is not None and p["tie"]]
    return {"n": len(parts), "identical": sum(p is None for p in parts), "ties": len(ties),
            "differences": sum(p is not None and not p["tie"] for p in parts), "tol": tol,
            "divergences": [dict(p, row=row) for row, p in enumerate(parts) if p is not None]}


def check_layers(model, neurons: Neurons) -> None:
    """Refuse neuron ids that do not exist in this model."""
    n_layers = len(decoder_layers(model))
    width = model.config.intermediate_size
    for layer, ids in neurons.items():
        if not 0 <= layer < n_layers or (len(ids) and (int(ids.max()) >= width or int(ids.min()) < 0)):
            raise PatchingError(f"neuron ids out of range at layer {layer} for a {n_layers}x{width} model")


# --------------------------------------------------------------------------------------- workflow entry


def select_neurons(index, k: int | float, selection: str, seed: int = 0):
    """The top-k MLP neurons of an index (``safety``) or a random control with the same per-layer counts."""
    from .neurons import resolve_k

    mlp = index.only("mlp")
    top = mlp.top(resolve_k(k, mlp.total_sites))
    if selection == "safety":
        return top
    if selection == "random":
        return top.random_like(seed)
    raise PatchingError(f"patching selection {selection!r} is not safety|random")


def change_shares(index, ks: Mapping[str, int | float], seed: int = 0) -> dict[str, dict[str, float | None]]:
    """Share of the contrast's whole squared change (S^2 summed over the MLP neurons it ranks) that each k's safety and
    random neurons carry: how concentrated the A - U difference is, which bounds what a sparse patch can restore."""
    import numpy as np

    mlp = index.only("mlp")
    change = np.zeros((mlp.num_layers, mlp.sites["mlp"]))
    change[mlp.layer.astype(np.int64), mlp.neuron.astype(np.int64)] = mlp.score.astype(np.float64) ** 2
    total = float(change.sum())
    out: dict[str, dict[str, float | None]] = {}
    for label, k in ks.items():
        out[label] = {}
        for selection in ("safety", "random"):
            chosen = select_neurons(index, k, selection, seed)
            carried = float(change[chosen.layer.astype(np.int64), chosen.neuron.astype(np.int64)].sum())
            out[label][selection] = round(carried / total, 4) if total > 0 else None
    return out


@contextmanager
def patched(model_u, neurons: Neurons, *, value: str, mode: str, a_ckpt=None, u_ckpt=None, stats=None,
            seed: int = 0, model_a=None) -> Iterator[None]:
    """Open the right patching context for a value (guided|mean|zero|noise) and mode (two_model|fused).

    ``model_a`` reuses an already loaded guide; otherwise two-model mode loads ``a_ckpt``.
    """
    check_layers(model_u, neurons)
    if value != "guided":
        mean = stats.mean_a if stats is not None else None
        std = stats.std("a") if stats is not None else None
        with static_patch(model_u, neurons, value, mean=mean, std=std, seed=seed):
            yield
        return
    if mode == "fused":
        with guided_fused(model_u, guide_adapters(u_ckpt, a_ckpt), neurons):
            yield
        return
    if mode != "two_model":
        raise PatchingError(f"patching.mode {mode!r} is not two_model|fused")
    if model_a is None:
        from .models import load_variant

        model_a, _ = load_variant(a_ckpt)
    with guided_two_model(model_u, model_a, neurons):
        yield


def guided_in_each_mode(model_u, neurons: Neurons, run: Callable[[], object], *, a_ckpt, u_ckpt,
                        model_a=None) -> dict[str, tuple[object, float]]:
    """``run()`` under guided patching in the two-model and then the fused mode, with its seconds in each: what a
    check that the two modes agree needs."""
    import time

    out = {}
    for mode in ("two_model", "fused"):
        start = time.perf_counter()
        with patched(model_u, neurons, value="guided", mode=mode, a_ckpt=a_ckpt, u_ckpt=u_ckpt, model_a=model_a):
            result = run()
        out[mode] = (result, round(time.perf_counter() - start, 2))
    return out


def patch_generate_file(u_ckpt, a_ckpt, index_path, prompts_parquet, out_parquet, gen_cfg, *, k: int | float,
                        selection: str, value: str = "guided", mode: str = "two_model", stats_path=None,
                        seed: int = 0) -> dict:
    """Workflow entry: U's answers with k neurons patched; returns what was patched."""
    from .data import read_table
    from .generate import generate_responses, write_generations
    from .models import load_variant
    from .neurons import NeuronIndex
    from .stats import PairedStats

    model_u, tok = load_variant(u_ckpt)
    index = NeuronIndex.read(index_path)
    index.check_fits(model_u.config, origin=str(index_path))
    chosen = select_neurons(index, k, selection, seed)
    stats = PairedStats.load(stats_path) if stats_path and value in ("mean", "noise") else None
    table = read_table(prompts_parquet)
    intervention = f"{value}:{selection}:k={len(chosen)}:{mode}"
    with patched(model_u, chosen.by_layer("mlp"), value=value, mode=mode, a_ckpt=a_ckpt, u_ckpt=u_ckpt,
                 stats=stats, seed=seed):
        responses = generate_responses(model_u, tok, table.column("prompt").to_pylist(), gen_cfg,
                                       desc=f"patch {selection} k={len(chosen)}")
    write_generations(table, responses, out_parquet, variant=f"patch_{selection}", intervention=intervention)
    return {"neurons": len(chosen), "per_layer": chosen.per_layer_counts().get("mlp", [])}


def perplexity_file(u_ckpt, a_ckpt, index_path, text_parquet, *, ks, mode: str = "two_model",
                    seed: int = 0, batch_size: int = 8) -> dict:
    """Perplexity of held-out benign text for U, A, and U with safety or random neurons guided by A, at every k.

    ``ks`` maps each k's label (as in the patched variants' names) to its count or fraction; entries are keyed
    ``safety_k<label>`` and ``random_k<label>``.
    """
    from .data import read_table
    from .perplexity import perplexity, perplexity_texts
    from .models import load_variant
    from .neurons import NeuronIndex

    texts, prompts, scored = perplexity_texts(read_table(text_parquet))
    model_u, tok = load_variant(u_ckpt)
    model_a, _ = load_variant(a_ckpt)
    index = NeuronIndex.read(index_path)
    index.check_fits(model_u.config, origin=str(index_path))
    out = {"text": scored, "unaligned": perplexity(model_u, tok, texts, prompts, batch_size),
           "aligned": perplexity(model_a, tok, texts, prompts, batch_size)}
    for label, k in ks.items():
        for selection in ("safety", "random"):
            chosen = select_neurons(index, k, selection, seed)
            with patched(model_u, chosen.by_layer("mlp"), value="guided", mode=mode, a_ckpt=a_ckpt, u_ckpt=u_ckpt,
                         model_a=model_a):
                out[f"{selection}_k{label}"] = dict(perplexity(model_u, tok, texts, prompts, batch_size),
                                                    neurons=len(chosen))
    return out
