"""Cross-method overlap of safety neurons: do contrast, PLND, SNIP, Wanda and low-rank pick the same neurons?

    >>> section = overlap_section({"contrast": "neurons/contrast.parquet", "plnd": "neurons/plnd.parquet",
    ...                            "lowrank": "neurons/lowrank_masks.safetensors"}, OverlapConfig(dense_k=0.01))
    >>> plot_overlap(section, "overlap.png")

Every method becomes one dense score array ``[num_layers, size]`` per module over all the model's
neurons; a neuron the method says nothing about scores ``-inf`` (they all tie at the bottom).
For every pair of methods and every module both cover:

- Jaccard at matched sizes: ``k = min(|selected_a|, |selected_b|)``; each side's top-k by score,
  ties broken by (layer, neuron) ascending; ``J = |A & B| / |A | B|``. Beside it the chance level
  of two random k-sets out of N neurons, ``k / (2N - k)`` (ratio of the expectations), and how many
  of each top-k were picked by the tie-break (``tie_broken``). Per layer the same within the layer,
  with ``k_l = min`` of the two methods' selected counts in that layer.
- Spearman rho (Pearson correlation of average ranks, so ties count) over every neuron of the
  module, pooled and per layer; ``None`` where one side is constant.

Selected sets:

- a neuron index (``.parquet``): its entries of the module. A method that scores every neuron of
  each layer it covers (contrast) would select everything, so it selects its top ``dense_k``.
- adapter masks (``.safetensors``, SNIP/Wanda/low-rank): the neurons with at least one kept entry.

Neuron ids are those of PLND and :mod:`neuronkit.hooks`. The LoRA entries touching them:

- ``mlp`` j (input j of ``down_proj``): row j of ``gate_proj``/``up_proj`` ``lora_B`` ``[I, r]`` and
  column j of ``down_proj`` ``lora_A`` ``[r, I]``;
- ``q``/``k``/``v`` d (output d of the projection, pre-RoPE, ``head * head_dim + dim`` with k/v by
  kv head): row d of ``q_proj``/``k_proj``/``v_proj`` ``lora_B``;
- ``o`` j (input j of ``o_proj``, the concatenated head outputs): column j of ``o_proj`` ``lora_A``.

The other factors (``lora_A`` of gate/up/q/k/v, ``lora_B`` of down/o) live in the hidden and rank
spaces and touch no neuron; they are ignored. A mask neuron scores the fraction of kept entries
among the entries touching it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .archs import MODULES, ArchSpec, arch_for
from .neurons import NeuronIndex


class OverlapError(ValueError):
    """Methods cannot be compared: unreadable, malformed or made for different models."""


@dataclass(frozen=True)
class OverlapConfig:
    """How big the compared sets are and which modules count."""

    dense_k: int | float | None = 0.01  # a method scoring every neuron selects this many: count, fraction, None = all
    modules: tuple[str, ...] = MODULES

    def __post_init__(self) -> None:
        k = self.dense_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, float))
                              or not (k >= 1 and float(k).is_integer() or 0 < k < 1)):
            raise OverlapError(f"overlap.dense_k must be a count >= 1, a fraction in (0, 1) or null, got {k!r}")
        modules = (self.modules,) if isinstance(self.modules, str) else tuple(self.modules)
        bad = sorted(set(modules) - set(MODULES))
        if bad or not modules:
            raise OverlapError(f"overlap.modules: {bad or 'empty'} not a non-empty subset of {list(MODULES)}")
        object.__setattr__(self, "modules", tuple(m for m in MODULES if m in modules))

    def dense_count(self, covered: int) -> int:
        """How many neurons a method that scores all of its ``covered`` neurons selects."""
        if self.dense_k is None:
            return covered
        if self.dense_k < 1:
            return int(round(self.dense_k * covered))
        return min(int(self.dense_k), covered)

    def to_json(self) -> dict:
        return {"dense_k": self.dense_k, "modules": list(self.modules)}


@dataclass
class MethodScores:
    """One method as dense per-module scores (-inf where it says nothing) and its selected set."""

    name: str
    file: str
    kind: str  # "index" | "masks" | "scores"
    scores: dict[str, np.ndarray]  # module -> float64 [layers, size]
    selected: dict[str, np.ndarray] = field(default_factory=dict)  # module -> bool [layers, size]
    dense: dict[str, bool] = field(default_factory=dict)
    ignored_tensors: int = 0

    def summary(self) -> dict:
        """What the report says about the method: its file and per-module set sizes."""
        modules = {m: {"covered": int(np.isfinite(s).sum()), "selected": int(self.selected[m].sum()),
                       "dense": self.dense[m]} for m, s in self.scores.items()}
        out = {"name": self.name, "file": self.file, "kind": self.kind, "modules": modules}
        if self.kind in ("masks", "scores"):
            out["ignored_tensors"] = self.ignored_tensors
        return out


# ----------------------------------------------------------------------------- statistics


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a flat array, tied values sharing their mean rank (-inf ties at the bottom)."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(starts_group) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rho with average ranks for ties; None when either side is constant."""
    ra, rb = average_ranks(np.ravel(a)), average_ranks(np.ravel(b))
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return None if den == 0 else max(-1.0, min(1.0, float(ra @ rb) / den))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of the k highest scores; ties go to the lower (layer, neuron) position."""
    flat = np.ravel(scores)
    mask = np.zeros(flat.shape, dtype=bool)
    mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(np.shape(scores))


def tie_broken(scores: np.ndarray, k: int) -> int:
    """How many of the top k the tie-break chose: members tied with the best neuron left out."""
    flat = np.sort(np.ravel(scores))[::-1]
    if k <= 0 or k >= len(flat):
        return 0
    return int((flat[:k] == flat[k]).sum())


def jaccard(a: np.ndarray, b: np.ndarray) -> float | None:
    """|A & B| / |A | B| of two bool masks; None for two empty sets."""
    union = int((a | b).sum())
    return None if union == 0 else int((a & b).sum()) / union


def random_jaccard(k: int, n: int) -> float | None:
    """Chance Jaccard of two random k-subsets of n, k / (2n - k) (ratio of expectations)."""
    return None if k <= 0 or n <= 0 else k / (2 * n - k)


# ----------------------------------------------------------------------------- neuron indexes


def index_scores(index: NeuronIndex, origin: str = "neuron index") -> dict[str, np.ndarray]:
    """Dense per-module ``[layers, size]`` scores of an index's entries; -inf for neurons it lacks."""
    num_layers, sites = index.num_layers, index.sites
    if len(index) and not np.isfinite(index.score).all():
        raise OverlapError(f"{origin}: scores must be finite (found NaN or inf)")
    out = {}
    for module in MODULES:
        sel = index.module == module
        if not sel.any():
            continue
        layer, neuron = index.layer[sel].astype(np.int64), index.neuron[sel].astype(np.int64)
        _check_ids(origin, module, layer, neuron, num_layers, sites[module])
        dense = np.full((num_layers, sites[module]), -np.inf)
        dense[layer, neuron] = index.score[sel]
        out[module] = dense
    return out


def _check_ids(origin: str, module: str, layer: np.ndarray, neuron: np.ndarray, num_layers: int, size: int) -> None:
    """Refuse ids outside the model and neurons listed twice."""
    if layer.min() < 0 or layer.max() >= num_layers or neuron.min() < 0 or neuron.max() >= size:
        raise OverlapError(f"{origin}: {module} ids out of range ({num_layers} layers x {size} neurons)")
    if len(np.unique(layer * size + neuron)) != len(layer):
        raise OverlapError(f"{origin}: some {module} neurons are listed more than once")


def is_dense(scores: np.ndarray) -> bool:
    """Whether a method scores every neuron of each layer it covers at all (as contrast does)."""
    listed = np.isfinite(scores)
    covered_layers = listed.any(axis=1)
    return bool(covered_layers.any() and listed[covered_layers].all())


# ----------------------------------------------------------------------------- adapter masks


def _factor_sites(spec: ArchSpec) -> dict[tuple[str, str], tuple[str, int]]:
    """(module path inside a layer, LoRA factor) -> (neuron site, tensor axis that indexes the neuron)."""
    mlp, attn = spec.mlp, spec.attn
    return {(f"{mlp}.{spec.gate}", "B"): ("mlp", 0), (f"{mlp}.{spec.up}", "B"): ("mlp", 0),
            (f"{mlp}.{spec.down}", "A"): ("mlp", 1), (f"{attn}.{spec.q}", "B"): ("q", 0),
            (f"{attn}.{spec.k}", "B"): ("k", 0), (f"{attn}.{spec.v}", "B"): ("v", 0),
            (f"{attn}.{spec.o}", "A"): ("o", 1)}


def _key_pattern(spec: ArchSpec) -> re.Pattern:
    """``...model.layers.{l}.{path}.lora_{A|B}[.adapter].weight`` as in adapter files."""
    return re.compile(rf"(?:^|\.){re.escape(spec.layers)}\.(\d+)\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def _factor_entries(tensors: Mapping[str, torch.Tensor], spec: ArchSpec, origin: str, kind: str):
    """(layer, site, per-neuron total, entries per neuron, key) for each factor touching neurons; and the ignored count.

    The total is the kept count for masks and the summed absolute entry score for scores.
    """
    pattern, sites = _key_pattern(spec), _factor_sites(spec)
    found, ignored = [], 0
    for key in sorted(tensors):
        tensor = tensors[key]
        match = pattern.search(key)
        site = sites.get((match.group(2), match.group(3))) if match else None
        if site is None:
            ignored += 1
            continue
        right_dtype = tensor.dtype == torch.bool if kind == "masks" else tensor.is_floating_point()
        if not right_dtype or tensor.dim() != 2:
            expected = "bool mask" if kind == "masks" else "float score tensor"
            raise OverlapError(f"{origin}: {key} must be a 2-D {expected}, got {tensor.dtype} {tuple(tensor.shape)}")
        module, axis = site
        values = tensor.double() if kind == "masks" else tensor.double().abs()
        found.append((int(match.group(1)), module, values.sum(dim=1 - axis).numpy(), tensor.shape[1 - axis], key))
    return found, ignored


def adapter_neuron_scores(tensors: Mapping[str, torch.Tensor], origin: str = "masks", model_type: str | None = None,
                          *, kind: str = "masks") -> tuple[dict[str, np.ndarray], int]:
    """Per-module ``[layers, size]`` neuron scores from LoRA-entry masks or scores, and the tensors ignored.

    masks: the kept fraction of the entries touching a neuron; scores: their mean absolute score.
    Layers run to the highest layer seen; a layer no factor of a module touches is -inf there.
    """
    spec = arch_for(model_type) if model_type else ArchSpec()
    found, ignored = _factor_entries(tensors, spec, origin, kind)
    if not found:
        raise OverlapError(f"{origin}: no LoRA factor touches an mlp/q/k/v/o neuron "
                           f"(keys like '...{spec.layers}.0.{spec.mlp}.{spec.up}.lora_B.weight')")
    num_layers = 1 + max(layer for layer, *_ in found)
    sizes: dict[str, tuple[int, str]] = {}
    kept: dict[str, np.ndarray] = {}
    entries: dict[str, np.ndarray] = {}
    for layer, module, counts, width, key in found:
        size, first = sizes.setdefault(module, (len(counts), key))
        if len(counts) != size:
            raise OverlapError(f"{origin}: {key} gives {len(counts)} {module} neurons but {first} gives {size}")
        kept.setdefault(module, np.zeros((num_layers, size)))[layer] += counts
        entries.setdefault(module, np.zeros((num_layers, 1)))[layer] += width
    return {m: _kept_fraction(kept[m], entries[m]) for m in MODULES if m in kept}, ignored


def adapter_file_kind(tensors: Mapping[str, torch.Tensor], origin: str) -> str:
    """'masks' for a bool file (safety_masks' masks), 'scores' for a float one (its entry scores)."""
    kinds = {"masks" if t.dtype == torch.bool else "scores" if t.is_floating_point() else str(t.dtype)
             for t in tensors.values()}
    if len(kinds) != 1 or not kinds <= {"masks", "scores"}:
        raise OverlapError(f"{origin}: expected all-bool masks or all-float scores, found {sorted(kinds)}")
    return kinds.pop()


def _kept_fraction(kept: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """kept / entries per neuron, -inf in layers without entries."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(entries > 0, kept / np.maximum(entries, 1), -np.inf)


def load_mask_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Raw mask or score tensors (dtype kept: bool means masks, float means entry scores)."""
    from .artifacts import read_safetensors

    if not Path(path).exists():
        raise OverlapError(f"mask file {path} does not exist")
    return read_safetensors(path)


# ----------------------------------------------------------------------------- loading and shapes


def _shape_key(shape: Mapping) -> tuple[int, dict[str, int]]:
    return int(shape["num_layers"]), {k: int(v) for k, v in shape["sites"].items()}


def _read_indexes(methods: Mapping[str, str | os.PathLike]) -> tuple[dict[str, NeuronIndex], dict | None, str | None]:
    """Every ``.parquet`` method, refusing two made for different model shapes; plus the shape and its file."""
    indexes, shape, shape_file = {}, None, None
    for name, path in methods.items():
        if Path(path).suffix != ".parquet":
            continue
        index = NeuronIndex.read(path)
        if not index.meta.get("shape"):
            raise OverlapError(f"overlap: neuron index {path} (method {name!r}) has no model 'shape' in its metadata")
        if shape is None:
            shape, shape_file = index.shape, str(path)
        elif _shape_key(index.shape) != _shape_key(shape):
            raise OverlapError(f"overlap: {path} was made for a model with {_shape_key(index.shape)} "
                               f"(layers, sites) but {shape_file} for {_shape_key(shape)}; compare one model at a time")
        indexes[name] = index
    return indexes, shape, shape_file


def _fit_masks(scores: dict[str, np.ndarray], path, shape: dict, shape_file: str) -> dict[str, np.ndarray]:
    """Pad mask scores to the model's layers, refusing masks of another model."""
    num_layers, sites = _shape_key(shape)
    out = {}
    for module, s in scores.items():
        if s.shape[0] > num_layers or s.shape[1] != sites.get(module):
            raise OverlapError(f"overlap: {path} has {s.shape[0]} layers x {s.shape[1]} {module} neurons, "
                               f"but {shape_file} was made for {num_layers} layers x {sites.get(module)}")
        out[module] = np.concatenate([s, np.full((num_layers - s.shape[0], s.shape[1]), -np.inf)])
    return out


def _masks_shape(methods: list[MethodScores]) -> dict:
    """The model shape mask files imply when no index gives one: layers up to the highest seen, first size seen."""
    scores = [s for method in methods for s in method.scores.values()]
    sites: dict[str, int] = {}
    for method in methods:
        for module, s in method.scores.items():
            sites.setdefault(module, s.shape[1])
    return {"num_layers": max(s.shape[0] for s in scores), "sites": sites}


def load_methods(methods: Mapping[str, str | os.PathLike], cfg: OverlapConfig) -> list[MethodScores]:
    """Read every method file (``.parquet`` index or ``.safetensors`` masks) onto one model's neurons."""
    if len(methods) < 1:
        raise OverlapError("overlap: no methods given")
    for name, path in methods.items():
        if Path(path).suffix not in (".parquet", ".safetensors"):
            raise OverlapError(f"overlap: method {name!r} file {path} is neither a neuron index (.parquet) "
                               "nor adapter masks (.safetensors)")
    indexes, shape, shape_file = _read_indexes(methods)
    loaded = []
    for name, path in methods.items():
        if name in indexes:
            loaded.append(MethodScores(name, str(path), "index", index_scores(indexes[name], str(path))))
            continue
        tensors = load_mask_file(path)
        kind = adapter_file_kind(tensors, str(path))
        scores, ignored = adapter_neuron_scores(tensors, str(path), (shape or {}).get("model_type"), kind=kind)
        loaded.append(MethodScores(name, str(path), kind, scores, ignored_tensors=ignored))
    if shape is None:
        shape, shape_file = _masks_shape(loaded), loaded[0].file
    for method in loaded:
        if method.kind in ("masks", "scores"):
            method.scores = _fit_masks(method.scores, method.file, shape, shape_file)
        method.scores = {m: s for m, s in method.scores.items() if m in cfg.modules}
        _select(method, cfg)
    return loaded


def _select(method: MethodScores, cfg: OverlapConfig) -> None:
    """Each module's selected set: index entries (top dense_k when dense), mask neurons with a kept entry, or the
    top dense_k of an entry-score file (it scores every neuron)."""
    for module, s in method.scores.items():
        dense = method.kind == "scores" or (method.kind == "index" and is_dense(s))
        method.dense[module] = dense
        if method.kind == "masks":
            method.selected[module] = s > 0
        elif dense:
            method.selected[module] = top_k(s, cfg.dense_count(int(np.isfinite(s).sum())))
        else:
            method.selected[module] = np.isfinite(s)


# ----------------------------------------------------------------------------- comparisons


def compare(a: MethodScores, b: MethodScores, module: str) -> dict:
    """Matched-size Jaccard and Spearman of two methods on one module, pooled and per layer."""
    sa, sb = a.scores[module], b.scores[module]
    k = int(min(a.selected[module].sum(), b.selected[module].sum()))
    return {"a": a.name, "b": b.name, "module": module, "k": k, "neurons": int(sa.size),
            "jaccard": jaccard(top_k(sa, k), top_k(sb, k)), "jaccard_random": random_jaccard(k, sa.size),
            "spearman": spearman(sa, sb), "tie_broken": {"a": tie_broken(sa, k), "b": tie_broken(sb, k)},
            "per_layer": [_compare_layer(a, b, module, layer) for layer in range(sa.shape[0])]}


def _compare_layer(a: MethodScores, b: MethodScores, module: str, layer: int) -> dict:
    """The same comparison inside one layer, with k_l = min of the two selected counts there."""
    sa, sb = a.scores[module][layer], b.scores[module][layer]
    k = int(min(a.selected[module][layer].sum(), b.selected[module][layer].sum()))
    return {"layer": layer, "k": k, "jaccard": jaccard(top_k(sa, k), top_k(sb, k)),
            "jaccard_random": random_jaccard(k, sa.size), "spearman": spearman(sa, sb)}


def _matrix(methods: list[MethodScores], module: str, pairs: dict[tuple[str, str], dict]) -> dict:
    """Symmetric Jaccard and Spearman matrices of the methods covering a module (diagonal: self-comparison)."""
    labels = [m.name for m in methods]
    jac, rho = [], []
    for ma in methods:
        row_j, row_r = [], []
        for mb in methods:
            pair = pairs.get((ma.name, mb.name)) or pairs.get((mb.name, ma.name)) or _self(ma, module)
            row_j.append(pair["jaccard"])
            row_r.append(pair["spearman"])
        jac.append(row_j)
        rho.append(row_r)
    return {"labels": labels, "jaccard": jac, "spearman": rho,
            "jaccard_random": [[(pairs.get((x, y)) or pairs.get((y, x)) or {}).get("jaccard_random")
                                for y in labels] for x in labels]}


def _self(method: MethodScores, module: str) -> dict:
    """A method against itself: 1.0 unless its set is empty or its scores constant."""
    s = method.scores[module]
    return {"jaccard": 1.0 if method.selected[module].any() else None,
            "spearman": None if np.all(s.ravel() == s.ravel()[0]) else 1.0}


def overlap_section(methods: Mapping[str, str | os.PathLike], cfg: OverlapConfig | None = None) -> dict:
    """The report.json section: per-pair, per-module overlap figures and the matrices behind the heat map."""
    cfg = cfg or OverlapConfig()
    loaded = load_methods(methods, cfg)
    pairs: dict[tuple[str, str], dict] = {}
    for module in cfg.modules:
        covering = [m for m in loaded if module in m.scores]
        for i, a in enumerate(covering):
            for b in covering[i + 1:]:
                pairs[(a.name, b.name, module)] = compare(a, b, module)
    matrix = {}
    for module in cfg.modules:
        covering = [m for m in loaded if module in m.scores]
        if covering:
            by_pair = {(a, b): p for (a, b, mod), p in pairs.items() if mod == module}
            matrix[module] = _matrix(covering, module, by_pair)
    return {"methods": [m.summary() for m in loaded], "pairs": list(pairs.values()), "matrix": matrix,
            "config": cfg.to_json(), "definitions": DEFINITIONS}


DEFINITIONS = {
    "k": "min of the two methods' selected-set sizes (per layer: min of the per-layer counts)",
    "jaccard": "|top-k(a) & top-k(b)| / |union|; ties broken by (layer, neuron) ascending",
    "jaccard_random": "chance level for two random k-sets of the module's neurons: k / (2N - k)",
    "spearman": "rank correlation (average ranks) over every neuron of the module; unlisted neurons tie last",
    "tie_broken": "members of each top-k chosen by the tie-break (tied with the first neuron left out)",
}


# ----------------------------------------------------------------------------- figure


def plot_overlap(section: dict, out_png: str | os.PathLike) -> None:
    """Heat maps of the Jaccard (chance level in brackets) and Spearman matrices, one row per module."""
    from .plotting import pyplot, save_figure

    plt = pyplot()

    modules = [m for m, mat in section["matrix"].items() if len(mat["labels"]) >= 2]
    n = max([len(section["matrix"][m]["labels"]) for m in modules] or [2])
    side = 1.2 + 0.9 * n
    fig, axes = plt.subplots(max(len(modules), 1), 2, figsize=(2 * side + 1.5, side * max(len(modules), 1)),
                             dpi=100, squeeze=False)
    if not modules:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][0].text(0.5, 0.5, "no module is covered by two methods", ha="center", va="center")
    for row, module in zip(axes, modules):
        mat = section["matrix"][module]
        _heat(fig, row[0], mat, "jaccard", (0.0, 1.0), "viridis", f"{module}: Jaccard at matched k (chance)")
        _heat(fig, row[1], mat, "spearman", (-1.0, 1.0), "RdBu_r", f"{module}: Spearman rho")
    fig.suptitle("Cross-method overlap of safety neurons")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    save_figure(fig, out_png)


def _heat(fig, ax, mat: dict, key: str, limits: tuple[float, float], cmap: str, title: str) -> None:
    """One annotated heat map; missing values are grey and marked with a dash."""
    values = np.array([[np.nan if v is None else v for v in row] for row in mat[key]], dtype=float)
    colors = _masked_cmap(cmap)
    image = ax.imshow(np.ma.masked_invalid(values), vmin=limits[0], vmax=limits[1], cmap=colors)
    labels = mat["labels"]
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, _cell_text(mat, key, i, j), ha="center", va="center", fontsize=8,
                    color=_text_color(values[i, j], limits))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)


def _masked_cmap(name: str):
    """A colour map whose masked cells are light grey."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="#dddddd")


def _cell_text(mat: dict, key: str, i: int, j: int) -> str:
    value = mat[key][i][j]
    if value is None:
        return "-"
    chance = mat["jaccard_random"][i][j] if key == "jaccard" else None
    return f"{value:.2f}" + (f"\n({chance:.3f})" if chance is not None else "")


def _text_color(value: float, limits: tuple[float, float]) -> str:
    """White on the dark ends of the colour map, black elsewhere."""
    if not np.isfinite(value):
        return "black"
    t = (value - limits[0]) / (limits[1] - limits[0])
    return "white" if (t < 0.35 if limits[0] == 0 else abs(t - 0.5) > 0.35) else "black"


# ----------------------------------------------------------------------------- workflow entry


def overlap_files(methods: Mapping[str, str | os.PathLike], out_json: str | os.PathLike,
                  out_png: str | os.PathLike, cfg: OverlapConfig | None = None) -> dict:
    """Workflow entry: write the overlap section (JSON) and its heat map."""
    from .atomic import write_json

    section = overlap_section(methods, cfg)
    write_json(section, out_json)
    plot_overlap(section, out_png)
    return section
