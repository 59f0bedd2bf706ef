"""PLND (docs/methods.md, B1): every neuron's deactivation importance from ONE forward pass per document.

Run ``plnd_importance(model, ids)`` for one document's scores, or ``detect_neurons`` for a neuron set:

    >>> cfg = PLNDConfig(ffn_top_k=2000, attn_top_k=1000)
    >>> safety = detect_neurons(model, tok, harmful_prompts, cfg, {"dataset": "harmful"})
    >>> foundation = detect_neurons(model, tok, wiki_texts, cfg, {"dataset": "wiki"})
    >>> rsn = rsn_neurons(safety, foundation)      # RSN-Tune's set: safety minus foundation

Importance = how much the layer's output changes when the neuron is zeroed. Norms run over the
document's real tokens (padding is dropped). For a layer with T tokens:

- ``mlp`` neuron k (input of ``down_proj``, ``h = act(gate(x)) * up(x)``):
  ``||h[:, k]||_2 * ||W_down[:, k]||_2``. This is exactly ``||change of the MLP output||_F``.
  ``ffn_score="legacy_up_abs"`` gives the public code's ``sum_t |up_proj(x)[t, k]|`` instead.
- ``q`` / ``k`` dims are the **pre-RoPE** projection rows. These are the q/k sites of
  :mod:`neuronkit.hooks`, the rows that B2 deactivates and B3 tunes. A post-RoPE dim is no parameter:
  RoPE mixes dim d with its partner d +- head_dim/2. Zeroing pre-RoPE dim d removes
  ``rope(Q * e_d)``, which lands on both dims. The score is
  ``|| softmax(S - dS_d) - softmax(S) ||_F`` over (query, key) under the causal mask, where:
  - ``S = rope(Q) rope(K)^T * scaling``, with the attention module's own ``scaling``
    (``1/sqrt(d_h)`` for Llama);
  - ``dS_d`` is the exact change of S, so the score is exactly the change of the attention
    probabilities when the row is zeroed.
  - q dim ``(h, d)``: the norm over head h's (query, key) map.
  - k dim ``(g, d)`` of kv head g: ONE Frobenius norm over the maps of all query heads that read it,
    ``sqrt( sum_{h: h // group == g} ||P'_h - P_h||_F^2 )``.
- ``v`` dim ``(g, d)``: zeroing it zeroes ``z[:, h*d_h + d] = (A_h V_g)[:, d]`` for every query head
  h of group g, where z is the input of ``o_proj``. The score is the exact change of the attention
  output, ``|| sum_h z[:, j_h] W_o[:, j_h]^T ||_F``. With one query head per kv head this is
  ``||(A V)[:, d]||_2 * ||W_o[:, j]||_2``.
- ``o`` dim j (input of ``o_proj``): ``||z[:, j]||_2 * ||W_o[:, j]||_2``, which is exact.
- GQA: ``group = num_attention_heads // num_key_value_heads``. Query head h reads kv head
  ``h // group``, i.e. kv row ``(h // group) * head_dim + d``. The public code's ``d // group``
  picks the wrong rows.

What hooks give and what they do not:
- From hooks: the q/k/v projection outputs, the o_proj and down_proj inputs, and the
  ``(cos, sin)`` that the decoder passes to the attention module as ``position_embeddings``
  (a pre-hook with kwargs).
- Not from hooks: RoPE is a function call inside ``forward``, not a module, so no hook sees rope'd
  Q/K. They are rebuilt with the family's own ``apply_rotary_pos_emb`` from its modeling module,
  not with a copy.
- Not from hooks: SDPA and flash attention return no probabilities, so S and its softmax are
  recomputed from the rope'd Q/K.
- For q/k scoring, a clear error is raised for what that recomputation does not model: q/k norms
  (Qwen3), logit soft-capping (Gemma2), and a sliding window shorter than the document.

Safety set (:class:`IntersectionReducer`):
- Per document, a neuron qualifies if its importance is ``>= eps``, or if it is in the top-k of its
  (layer, module).
- The set is the neurons that qualify on EVERY document.
- Each kept neuron's score is its mean importance over the documents; this orders the index.
- Modules have different units (probability change for q/k, output change for the others), so rank
  within one module (``index.only("mlp")``). The global order mixes scales.
Memory is O(one layer) per document and O(L x N) across the corpus.

Cost:
- q/k scoring evaluates ``2 * H * d_h * T^2`` softmax entries per layer. It is computed head by head
  and chunked to about 64 MB.
- On a busy 2-core CPU, for a random model of SmolLM2-135M's size, it added seconds per 64-token
  document and about 45 s per 256-token document.
- mlp, v and o cost about one extra forward.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping

import torch

from ..archs import (MODULES, attn_module, check_supported, decoder_layers, head_dim, mlp_module, model_shape,
                     site_sizes, submodule)
from ..hooks import hooked
from ..neurons import NeuronIndex, NeuronIndexError

FFN_SCORES = ("exact", "legacy_up_abs")
ATTN_MODULES = ("q", "k", "v", "o")
_CHUNK_ELEMS = 1 << 24  # cap on (dims x T x T) per softmax batch: ~64 MB in fp32


# ----------------------------------------------------------------------------- config


def check_modules(modules: Iterable[str]) -> tuple[str, ...]:
    """Validate module names early; return them in canonical site order."""
    given = list(modules) if not isinstance(modules, str) else [modules]
    bad = sorted(set(given) - set(MODULES))
    if bad:
        raise ValueError(f"PLND: unknown module(s) {bad}; expected a subset of {list(MODULES)}")
    if not given or len(set(given)) != len(given):
        raise ValueError(f"PLND: modules must be a non-empty list without repeats, got {given}")
    return tuple(m for m in MODULES if m in given)


def _check_rule(family: str, top_k, eps) -> None:
    """Exactly one selection rule per family: a per-layer top-k or an importance threshold."""
    if (top_k is None) == (eps is None):
        raise ValueError(f"PLND: give exactly one of {family}_top_k or {family}_eps (got {top_k!r} and {eps!r})")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"PLND: {family}_top_k must be an integer >= 1, got {top_k!r}")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0):
        raise ValueError(f"PLND: {family}_eps must be a number >= 0, got {eps!r}")


POSITIONS = ("all", "document")  # token positions whose activations are scored


# Keys of the config's plnd section that say what to detect on and which set to use, not how to score.
STAGE_ONLY_KEYS = ("variant", "dataset", "foundation_dataset", "n_docs", "selection")


@dataclass(frozen=True)
class PLNDConfig:
    """PLND settings; defaults as in the config schema (per-layer top 200 FFN / 100 attention dims, a tenth of the
    published 2,000 / 1,000 for a 14,336-neuron layer, since the schema's default model is far smaller)."""

    modules: tuple[str, ...] = MODULES
    ffn_top_k: int | None = 200  # per layer; set None and give ffn_eps for a threshold
    ffn_eps: float | None = None
    attn_top_k: int | None = 100  # per layer, per module (q, k, v, o each)
    attn_eps: float | None = None
    ffn_score: str = "exact"  # or "legacy_up_abs" (public code)
    max_length: int = 256  # tokens per document (truncated)
    chat: bool = True  # wrap each document in the model's chat template
    positions: str = "all"  # "document": score only the document's own tokens (not template or special tokens)
    max_peak_share: float | None = None  # drop MLP neurons whose h^2 sits more than this share on one token
    exclude_last_layers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", check_modules(self.modules))
        _check_rule("ffn", self.ffn_top_k, self.ffn_eps)
        _check_rule("attn", self.attn_top_k, self.attn_eps)
        if self.positions not in POSITIONS:
            raise ValueError(f"PLND: positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        if self.ffn_score not in FFN_SCORES:
            raise ValueError(f"PLND: unknown ffn_score {self.ffn_score!r}; expected one of {list(FFN_SCORES)}")
        if self.max_peak_share is not None and not (isinstance(self.max_peak_share, (int, float))
                                                    and not isinstance(self.max_peak_share, bool)
                                                    and 0 < self.max_peak_share <= 1):
            raise ValueError(f"PLND: max_peak_share must be a share in (0, 1] or null, got {self.max_peak_share!r}")
        if self.max_peak_share is not None and (self.ffn_score != "exact" or "mlp" not in self.modules):
            raise ValueError("PLND: max_peak_share needs the exact MLP score (ffn_score: exact, mlp in modules)")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"PLND: max_length must be an integer >= 1, got {self.max_length!r}")
        if isinstance(self.exclude_last_layers, bool) or not isinstance(self.exclude_last_layers, int) \
                or self.exclude_last_layers < 0:
            raise ValueError(f"PLND: exclude_last_layers must be an integer >= 0, got {self.exclude_last_layers!r}")

    @classmethod
    def from_stage(cls, section: Mapping, **extra) -> "PLNDConfig":
        """The detection settings of a config ``plnd`` section (what to detect on, and how to select, live beside)."""
        params = {k: v for k, v in section.items() if k not in STAGE_ONLY_KEYS}
        return cls(**{**params, "modules": tuple(params.get("modules", MODULES)), **extra})

    def rule(self, module: str) -> tuple[int | None, float | None]:
        """(top_k, eps) for a module's family."""
        return (self.ffn_top_k, self.ffn_eps) if module == "mlp" else (self.attn_top_k, self.attn_eps)

    def to_meta(self) -> dict:
        """JSON-ready parameters for the index metadata (progress is not a parameter)."""
        params = asdict(self)
        params.pop("progress")
        params["modules"] = list(self.modules)
        return params


# ----------------------------------------------------------------------------- per-layer maths


def _f(x: torch.Tensor) -> torch.Tensor:
    """Compute in at least fp32, whatever the model dtype."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def ffn_scores(h: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """``||h[:,k]|| * ||W_down[:,k]||``: the exact output change when neuron k is zeroed. h: [T, N]."""
    return h.norm(dim=0) * w_down.norm(dim=0)


def vo_scores(z: torch.Tensor, w_o: torch.Tensor, kv_heads: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact output change for zeroing each v row (all heads of its group) and each o input. z: [T, H*d]."""
    t, width = z.shape
    group = width // hd // kv_heads
    zz = z.view(t, kv_heads, group, hd)
    ww = w_o.view(-1, kv_heads, group, hd)
    gram_z = torch.einsum("tgad,tgbd->gdab", zz, zz)  # [kv, d, group, group]
    gram_w = torch.einsum("cgad,cgbd->gdab", ww, ww)
    v = (gram_z * gram_w).sum((-1, -2)).clamp_min(0).sqrt().flatten()
    return v, z.norm(dim=0) * w_o.norm(dim=0)


def rope_support(rope: Callable, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE as a sparse linear map per position, from the family's own function.

    Returns where pre-RoPE dim d lands (``supp [d, r]``) and with what weight (``coef [T, d, r]``).
    """
    t, hd = cos.shape[-2:]
    basis = torch.eye(hd, dtype=cos.dtype, device=cos.device)[None, :, None, :].expand(1, hd, t, hd)
    maps = rope(basis, basis, cos, sin)[0][0]  # [d, T, j] = M_t[j, d]
    hit = (maps != 0).any(dim=1)  # [d, j]
    r = int(hit.sum(dim=1).max())
    supp = torch.sort(hit.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :r]
    coef = maps.gather(2, supp[:, None, :].expand(hd, t, r)) * hit.gather(1, supp)[:, None, :]
    return supp, coef.permute(1, 0, 2)


def _prob_change_sq(s: torch.Tensor, p: torch.Tensor, ds: torch.Tensor) -> torch.Tensor:
    """``||softmax(S - dS) - softmax(S)||_F^2`` for a stack of perturbations dS [n, T, T]; masked S is -inf."""
    out = []
    for chunk in ds.split(max(1, _CHUNK_ELEMS // max(1, s.numel()))):
        changed = torch.sub(s, chunk).softmax(dim=-1)
        out.append(changed.sub_(p).square_().sum(dim=(1, 2)))
    return torch.cat(out)


def qk_scores(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope: Callable,
              scaling: float, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-perturbation scores of every pre-RoPE q and k dim. q: [T, H, d], k: [T, KV, d]; ``rows`` (bool [T])
    keeps the attention rows (queries) whose change is counted, every key column still taking part."""
    t, heads, hd = q.shape
    kv = k.shape[1]
    group = heads // kv
    qr, kr = (x[0] for x in rope(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin))  # [H|KV, T, d]
    supp, coef = rope_support(rope, cos, sin)
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    q_sq, k_sq = q.new_zeros(heads, hd), q.new_zeros(kv, hd)
    for h in range(heads):
        g = h // group  # GQA: query head h reads kv head h // group
        s = (qr[h] @ kr[g].T * scaling).masked_fill(future, float("-inf"))
        p = s.softmax(dim=-1)
        dq = torch.einsum("tdr,sdr->dts", q[:, h, :, None] * coef, kr[g][:, supp]) * scaling
        dk = torch.einsum("sdr,tdr->dts", k[:, g, :, None] * coef, qr[h][:, supp]) * scaling
        if rows is not None:
            s, p, dq, dk = s[rows], p[rows], dq[:, rows], dk[:, rows]
        q_sq[h] = _prob_change_sq(s, p, dq)
        k_sq[g] += _prob_change_sq(s, p, dk)
    return q_sq.sqrt().flatten(), k_sq.sqrt().flatten()


# ----------------------------------------------------------------------------- hooks


def _attention(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The attention block of a layer, found through the architecture table."""
    return decoder_layers(model)[layer].get_submodule(check_supported(model.config).attn)


def _rope_fn(attn: torch.nn.Module) -> Callable:
    """The family's own ``apply_rotary_pos_emb`` (RoPE is a function call, not a hookable module)."""
    fn = getattr(attn, "rotary_fn", None) or getattr(inspect.getmodule(type(attn)), "apply_rotary_pos_emb", None)
    if fn is None:
        raise NotImplementedError(f"PLND q/k: {type(attn).__name__} has no apply_rotary_pos_emb in its modeling module")
    return fn


def _check_qk_supported(model: torch.nn.Module, tokens: int) -> None:
    """Refuse attention features that the recomputed softmax would get wrong, before any compute."""
    cfg, attn = model.config, _attention(model, 0)
    if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        raise NotImplementedError("PLND q/k: per-head q/k norms (e.g. Qwen3) make the score non-linear; "
                                  "score modules ('mlp', 'v', 'o') only")
    if getattr(attn, "attn_logit_softcapping", None) or getattr(cfg, "attn_logit_softcapping", None):
        raise NotImplementedError("PLND q/k: attention logit soft-capping (e.g. Gemma2) is not modelled")
    windows = [w for w in (getattr(attn, "sliding_window", None), getattr(cfg, "sliding_window", None)) if w]
    if windows and tokens > min(windows):
        raise NotImplementedError(f"PLND q/k: document of {tokens} tokens exceeds the sliding window {min(windows)}; "
                                  "lower max_length")


class _Recorder:
    """Per-layer hooks that reduce one document's activations to scores at once (memory: one layer)."""

    def __init__(self, model: torch.nn.Module, modules: tuple[str, ...], ffn_score: str, valid: torch.Tensor,
                 rows: torch.Tensor):
        self.model, self.modules, self.ffn_score = model, modules, ffn_score
        self.valid, self.rows = valid, rows  # rows: the scored positions among the valid ones
        sizes = site_sizes(model.config)
        n_layers = len(decoder_layers(model))
        self.kv_heads = sizes["k"] // head_dim(model.config)
        self.scores = {m: torch.zeros(n_layers, sizes[m]) for m in modules}
        self.peak_share: dict[str, torch.Tensor] = {}  # mlp: share of each neuron's h^2 on its peak position
        self.stash: dict[int, dict[str, torch.Tensor]] = {}

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A [1, T, ...] site tensor as [T_real, ...] in compute precision."""
        return _f(x.detach()[0][self.valid])

    def scored(self, x: torch.Tensor) -> torch.Tensor:
        """A [1, T, ...] site tensor at the scored positions only."""
        return self.tokens(x)[self.rows]

    def registrations(self) -> list[tuple[torch.nn.Module, str, Callable]]:
        """Every hook this document needs, layer by layer."""
        regs = []
        for layer in range(len(decoder_layers(self.model))):
            if "mlp" in self.modules:
                regs.append(self._ffn_hook(layer))
            if set(self.modules) & {"q", "k"}:
                attn = _attention(self.model, layer)
                regs.append((attn, "pre_kw", self._stash_pos(layer)))
                for part in ("q", "k"):
                    regs.append((attn_module(self.model, layer, part), "post", self._stash_out(layer, part)))
            if set(self.modules) & set(ATTN_MODULES):
                regs.append((attn_module(self.model, layer, "o"), "pre", self._on_attn_out(layer)))
        return regs

    def _ffn_hook(self, layer: int) -> tuple[torch.nn.Module, str, Callable]:
        if self.ffn_score == "legacy_up_abs":
            def up_abs(_m, _args, out):
                self.scores["mlp"][layer] = self.scored(out).abs().sum(dim=0).float().cpu()
            return mlp_module(self.model, layer, "up"), "post", up_abs
        down = mlp_module(self.model, layer, "down")

        def exact(_m, args):
            h = self.scored(args[0])
            self.scores["mlp"][layer] = ffn_scores(h, _f(down.weight.detach())).float().cpu()
            sq = h.square()
            share = sq.max(dim=0).values / sq.sum(dim=0).clamp_min(torch.finfo(sq.dtype).tiny)
            self.peak_share.setdefault("mlp", torch.zeros_like(self.scores["mlp"]))[layer] = share.float().cpu()
        return down, "pre", exact

    def _stash_pos(self, layer: int) -> Callable:
        def hook(_m, _args, kwargs):
            pos = kwargs.get("position_embeddings")
            if pos is None:
                raise NotImplementedError("PLND q/k: the attention module got no position_embeddings kwarg "
                                          "(transformers too old for hook-based RoPE)")
            self.stash.setdefault(layer, {})["pos"] = tuple(_f(x.detach()[:, self.valid]) for x in pos)
        return hook

    def _stash_out(self, layer: int, part: str) -> Callable:
        def hook(_m, _args, out):
            self.stash.setdefault(layer, {})[part] = self.tokens(out)
        return hook

    def _on_attn_out(self, layer: int) -> Callable:
        o_proj = attn_module(self.model, layer, "o")

        def hook(_m, args):
            z, hd = self.scored(args[0]), head_dim(self.model.config)
            v, o = vo_scores(z, _f(o_proj.weight.detach()), self.kv_heads, hd)
            found = {"v": v, "o": o}
            if set(self.modules) & {"q", "k"}:
                found["q"], found["k"] = self._qk(layer, hd)
            for m in set(self.modules) & set(found):
                self.scores[m][layer] = found[m].float().cpu()
        return hook

    def _qk(self, layer: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
        got = self.stash.pop(layer)
        attn = _attention(self.model, layer)
        q, k = got["q"], got["k"]
        cos, sin = got["pos"]
        scaling = getattr(attn, "scaling", hd ** -0.5)
        return qk_scores(q.view(len(q), -1, hd), k.view(len(k), -1, hd), cos, sin, _rope_fn(attn), scaling,
                         rows=self.rows)


# ----------------------------------------------------------------------------- public API


def plnd_importance(model: torch.nn.Module, input_ids: torch.Tensor, **kw) -> dict[str, torch.Tensor]:
    """Importance of every neuron for ONE document, from one forward pass: ``{module: float32 [L, N]}`` on CPU
    (keywords as ``document_scores``)."""
    return document_scores(model, input_ids, **kw)[0]


def document_scores(model: torch.nn.Module, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                    modules: Iterable[str] = MODULES, ffn_score: str = "exact", score_mask: torch.Tensor | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One document's importances and, for the exact MLP score, each neuron's peak share (the share of its h^2 on
    its largest position: near 1 for a massive-activation neuron that fires on one token).

    ``score_mask`` ([T] or [1, T], bool) keeps the positions whose activations (and attention rows) are scored,
    e.g. the document's own tokens inside a chat template; every position still runs through the model."""
    modules = check_modules(modules)
    if ffn_score not in FFN_SCORES:
        raise ValueError(f"PLND: unknown ffn_score {ffn_score!r}; expected one of {list(FFN_SCORES)}")
    ids = input_ids.view(1, -1) if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError("PLND scores one document at a time: input_ids must be [T] or [1, T], "
                         f"got {tuple(input_ids.shape)}")
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.view(1, -1)
    if mask.shape != ids.shape:
        raise ValueError(f"PLND: attention_mask {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}")
    valid = mask[0].bool()
    if not valid.any():
        raise ValueError("PLND: the document has no tokens")
    if set(modules) & {"q", "k"}:
        _check_qk_supported(model, int(valid.sum()))
    scored = valid if score_mask is None else score_mask.view(-1).bool()
    if scored.shape != valid.shape or (scored & ~valid).any() or not scored.any():
        raise ValueError("PLND: score_mask must be a non-empty subset of the document's tokens, shaped like input_ids")
    device = next(model.parameters()).device
    rec = _Recorder(model, modules, ffn_score, valid.to(device), scored[valid].to(device))
    with torch.no_grad(), hooked(rec.registrations()):
        submodule(model, "decoder")(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    return rec.scores, rec.peak_share


def qualifying(scores: torch.Tensor, top_k: int | None = None, eps: float | None = None) -> torch.Tensor:
    """Neurons of one document that qualify: importance >= eps, or top-k per layer (stable ties: lower id)."""
    if eps is not None:
        return scores >= eps
    keep = torch.zeros_like(scores, dtype=torch.bool)
    order = torch.argsort(-scores, dim=1, stable=True)[:, :top_k]
    return keep.scatter_(1, order, True)


class IntersectionReducer:
    """Streams documents: a neuron survives only if it qualifies on EVERY one; keeps the sum of scores for the mean."""

    def __init__(self, cfg: PLNDConfig):
        self.cfg = cfg
        self.n_docs = 0
        self.alive: dict[str, torch.Tensor] = {}
        self.total: dict[str, torch.Tensor] = {}
        self.share_total: dict[str, torch.Tensor] = {}

    def update(self, scores: Mapping[str, torch.Tensor], peak_share: Mapping[str, torch.Tensor] | None = None) -> None:
        """Fold one document's scores (and peak shares) into the running intersection and sums."""
        for m, share in (peak_share or {}).items():
            share = share.detach().double().cpu()
            self.share_total[m] = share.clone() if m not in self.share_total else self.share_total[m] + share
        if self.cfg.max_peak_share is not None and "mlp" not in (peak_share or {}):
            raise ValueError("PLND: max_peak_share is set but the document's MLP peak shares were not given")
        missing = [m for m in self.cfg.modules if m not in scores]
        if missing:
            raise ValueError(f"PLND: document scores lack module(s) {missing}")
        for m in self.cfg.modules:
            s = scores[m].detach().double().cpu()
            ok = qualifying(s, *self.cfg.rule(m))
            if self.n_docs == 0:
                self.alive[m], self.total[m] = ok, s.clone()
            else:
                self.alive[m] &= ok
                self.total[m] += s
        self.n_docs += 1

    def index(self, meta: Mapping) -> NeuronIndex:
        """The intersection as a NeuronIndex ranked by mean importance over documents."""
        if self.n_docs == 0:
            raise ValueError("PLND: no documents were scored")
        if "shape" not in meta:
            raise ValueError("PLND: index metadata needs the model 'shape' (neuronkit.archs.model_shape)")
        mean = {m: self.total[m] / self.n_docs for m in self.cfg.modules}
        keep = {m: self.alive[m].clone() for m in self.cfg.modules}
        meta = {"method": "plnd", "score": "mean importance over documents",
                "selection": "qualifies on every document (intersection)", **dict(meta),
                "params": self.cfg.to_meta(), "n_docs": self.n_docs}
        if "mlp" in self.share_total:
            meta["peak_share"] = self._peak_share_summary(keep)
        return NeuronIndex.from_scores(mean, meta, exclude_last_layers=self.cfg.exclude_last_layers, keep=keep)

    def _peak_share_summary(self, keep: dict[str, torch.Tensor]) -> dict:
        """How concentrated the intersected MLP neurons are on one token; drops those above ``max_peak_share``
        from ``keep`` (in place) and counts them."""
        share = self.share_total["mlp"] / self.n_docs
        intersected = keep["mlp"].clone()
        if self.cfg.exclude_last_layers:
            intersected[share.shape[0] - self.cfg.exclude_last_layers:] = False
        excluded = 0
        if self.cfg.max_peak_share is not None:
            over = intersected & (share > self.cfg.max_peak_share)
            excluded = int(over.sum())
            keep["mlp"] &= ~over
        picked = share[intersected]
        return {"definition": "mean over documents of the share of a neuron's h^2 on its largest position",
                "module": "mlp", "intersected": int(intersected.sum()),
                "mean": round(float(picked.mean()), 6) if len(picked) else None,
                "over_half": int((picked > 0.5).sum()), "max_peak_share": self.cfg.max_peak_share,
                "excluded": excluded}


def encode(tok, text: str, cfg: PLNDConfig) -> torch.Tensor:
    """One document as [1, T] ids (chat-wrapped if asked, truncated to max_length)."""
    from ..models import chat_prompt

    if cfg.chat:
        text = chat_prompt(tok, text)
    ids = tok(text, return_tensors="pt", truncation=True, max_length=cfg.max_length,
              add_special_tokens=not cfg.chat).input_ids
    if ids.numel() == 0:
        raise ValueError(f"PLND: document {text[:40]!r} has no tokens")
    return ids


def document_positions(tok, text: str, cfg: PLNDConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One document as ([1, T] ids, [T] bool): the positions of the document's own tokens, not those of the chat
    template, its system prompt or special tokens (what ``positions: document`` scores)."""
    from ..models import chat_prompt

    if not getattr(tok, "is_fast", False):
        raise ValueError("PLND positions 'document' needs a fast tokenizer (character offsets of every token)")
    wrapped = chat_prompt(tok, text) if cfg.chat else text
    start = wrapped.find(text)
    if start < 0:
        raise ValueError(f"PLND: the chat template changed document {text[:40]!r}; its tokens cannot be located")
    end = start + len(text)
    enc = tok(wrapped, return_tensors="pt", truncation=True, max_length=cfg.max_length,
              add_special_tokens=not cfg.chat, return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets, special = enc["offset_mapping"][0], enc["special_tokens_mask"][0].bool()
    mask = (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0]) & ~special
    if not mask.any():
        raise ValueError(f"PLND: document {text[:40]!r} has no tokens of its own within max_length {cfg.max_length}")
    return enc["input_ids"], mask


def document_importance(model: torch.nn.Module, tok, text: str, cfg: PLNDConfig
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One document's importances and peak shares at the positions ``cfg.positions`` names."""
    if cfg.positions == "document":
        ids, mask = document_positions(tok, text, cfg)
        return document_scores(model, ids, modules=cfg.modules, ffn_score=cfg.ffn_score, score_mask=mask)
    return document_scores(model, encode(tok, text, cfg), modules=cfg.modules, ffn_score=cfg.ffn_score)


def detect_neurons(model: torch.nn.Module, tok, texts: Iterable[str], cfg: PLNDConfig | None = None,
                   meta: Mapping | None = None) -> NeuronIndex:
    """PLND neuron set over a corpus: harmful prompts give safety neurons, benign text foundation neurons."""
    from tqdm.auto import tqdm

    cfg = cfg or PLNDConfig()
    texts = list(texts)
    if not texts:
        raise ValueError("PLND: no documents given")
    shape = model_shape(model.config)
    reducer = IntersectionReducer(cfg)
    for text in tqdm(texts, desc="PLND", unit="doc", disable=not cfg.progress):
        reducer.update(*document_importance(model, tok, text, cfg))
    return reducer.index({**dict(meta or {}), "shape": shape})


def mean_importance(model: torch.nn.Module, tok, texts: Iterable[str], cfg: PLNDConfig) -> dict[str, torch.Tensor]:
    """Every neuron's mean importance over a corpus (``{module: float64 [L, N]}``), before any selection."""
    reducer = IntersectionReducer(cfg)
    for text in texts:
        reducer.update(*document_importance(model, tok, text, cfg))
    if reducer.n_docs == 0:
        raise ValueError("PLND: no documents given")
    return {m: reducer.total[m] / reducer.n_docs for m in cfg.modules}


def specific_neurons(harmful: Mapping[str, torch.Tensor], benign: Mapping[str, torch.Tensor],
                     counts: Mapping[str, int], meta: Mapping, eps: float = 1e-8) -> NeuronIndex:
    """Our extension (SN-Tune issue): the neurons most specific to harmful documents. Per module, the ``counts[m]``
    neurons with the largest log(mean harmful importance + eps) - log(mean benign importance + eps), all layers
    together; the index is ranked by that log-ratio."""
    keep, scores = {}, {}
    for m, n in counts.items():
        ratio = (harmful[m].double() + eps).log() - (benign[m].double() + eps).log()
        if n > ratio.numel():
            raise ValueError(f"PLND: {n} {m} neurons asked for, the model has {ratio.numel()}")
        top = torch.zeros(ratio.numel(), dtype=torch.bool)
        top[torch.argsort(-ratio.flatten(), stable=True)[:n]] = True
        keep[m], scores[m] = top.view_as(ratio), ratio
    meta = {"method": "plnd_specific", "score": "log(mean harmful importance + eps) - log(mean benign importance + eps)",
            "selection": "per module, the most harmful-specific neurons over all layers", "eps": eps, **dict(meta)}
    return NeuronIndex.from_scores(scores, meta, keep=keep)


def rsn_neurons(safety: NeuronIndex, foundation: NeuronIndex) -> NeuronIndex:
    """RSN-Tune's set, safety minus foundation neurons; refuses sets made for different models."""
    if (safety.num_layers, safety.sites) != (foundation.num_layers, foundation.sites):
        raise NeuronIndexError("rsn_neurons: the safety and foundation sets were made for different model shapes")
    return safety.difference(foundation)


def plnd_file(ckpt, prompts_parquet, out_index, cfg: PLNDConfig, *, n_docs: int | None = None,
              meta: Mapping | None = None) -> NeuronIndex:
    """Workflow entry: detect neurons of a checkpoint on a prepared dataset's prompts and write the index."""
    from ..data import read_table
    from ..models import load_variant

    model, tok = load_variant(ckpt)
    prompts = read_table(prompts_parquet).column("prompt").to_pylist()[:n_docs]
    index = detect_neurons(model, tok, prompts, cfg, dict(meta or {}, n_docs=len(prompts)))
    index.write(out_index)
    return index


def module_counts(index: NeuronIndex) -> dict[str, int]:
    """Neurons per module of an index (the specific ranking takes as many as the intersection found)."""
    return {m: int((index.module == m).sum()) for m in sorted(set(index.module))}


def specific_file(ckpt, harmful_parquet, benign_parquet, intersection_index, out_index, cfg: PLNDConfig, *,
                  n_docs: int | None = None, meta: Mapping | None = None) -> NeuronIndex:
    """Workflow entry (plnd.selection: specific): the harmful-specific ranking with the intersection's module counts."""
    from ..data import read_table
    from ..models import load_variant

    counts = module_counts(NeuronIndex.read(intersection_index))
    if not counts:
        raise ValueError(f"{intersection_index}: the PLND intersection is empty, so the specific ranking has no count "
                         "to match; lower plnd.ffn_top_k / attn_top_k thresholds or use more plnd.n_docs")
    model, tok = load_variant(ckpt)
    corpora = [read_table(p).column("prompt").to_pylist()[:n_docs] for p in (harmful_parquet, benign_parquet)]
    harmful, benign = (mean_importance(model, tok, texts, cfg) for texts in corpora)
    index = specific_neurons(harmful, benign, counts, {**dict(meta or {}), "shape": model_shape(model.config),
                                                        "n_docs": [len(t) for t in corpora]})
    index.write(out_index)
    return index

