"""The neuron index: a ranked set of (layer, module, neuron) sites with scores, stored as Parquet.

Every neuron method (contrast, PLND, SNIP, Wanda, low-rank) returns a :class:`NeuronIndex`.
On disk it is one Parquet file sorted by rank with the columns
``layer:int16, module:string, neuron:int32, score:float32, rank:int32`` and the metadata
(method, model shape, variants, dataset, params) as JSON in the Parquet schema metadata and in a
``.json`` sidecar, so pandas, pyarrow and duckdb read it without this package.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .archs import MODULES
from .artifacts import read_json

META_KEY = b"neuronkit"


class NeuronIndexError(ValueError):
    """A neuron index is malformed or does not fit the model it is applied to."""


@dataclass
class NeuronIndex:
    """Neurons in rank order (rank 0 = most important) plus what produced them."""

    layer: np.ndarray  # int16
    module: np.ndarray  # str (object)
    neuron: np.ndarray  # int32
    score: np.ndarray  # float32
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layer = np.asarray(self.layer, dtype=np.int16)
        self.module = np.asarray(self.module, dtype=object)
        self.neuron = np.asarray(self.neuron, dtype=np.int32)
        self.score = np.asarray(self.score, dtype=np.float32)
        n = len(self.layer)
        if not (len(self.module) == len(self.neuron) == len(self.score) == n):
            raise NeuronIndexError("neuron index columns have different lengths")
        bad = sorted(set(self.module.tolist()) - set(MODULES))
        if bad:
            raise NeuronIndexError(f"neuron index: unknown module(s) {bad}; expected one of {list(MODULES)}")

    def __len__(self) -> int:
        return len(self.layer)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_scores(cls, scores: Mapping[str, torch.Tensor], meta: dict, *, exclude_last_layers: int = 0,
                    keep: Mapping[str, torch.Tensor] | None = None) -> "NeuronIndex":
        """One global descending ranking over every (layer, module, neuron) score; ties by site order."""
        layers, modules, neurons, values = [], [], [], []
        for module in MODULES:
            if module not in scores:
                continue
            s = scores[module].detach().float().cpu()
            mask = torch.ones_like(s, dtype=torch.bool) if keep is None or module not in keep else keep[module].bool()
            if exclude_last_layers:
                mask[s.shape[0] - exclude_last_layers:] = False
            lay, neu = torch.nonzero(mask, as_tuple=True)
            layers.append(lay.numpy())
            neurons.append(neu.numpy())
            values.append(s[lay, neu].numpy())
            modules.append(np.full(len(lay), module, dtype=object))
        if not layers:
            raise NeuronIndexError("no scores given")
        score = np.concatenate(values).astype(np.float32)
        order = np.argsort(-score, kind="stable")  # deterministic: ties keep site order
        meta = dict(meta, exclude_last_layers=exclude_last_layers)
        return cls(np.concatenate(layers)[order], np.concatenate(modules)[order], np.concatenate(neurons)[order],
                   score[order], meta)

    def _take(self, idx: np.ndarray, **meta_update) -> "NeuronIndex":
        """A sub-index in the given row order."""
        return NeuronIndex(self.layer[idx], self.module[idx], self.neuron[idx], self.score[idx],
                           dict(self.meta, **meta_update))

    # ---------------------------------------------------------------- selections
    def top(self, k: int) -> "NeuronIndex":
        """The k highest-ranked neurons."""
        return self.window(0, k)

    def window(self, start: int, width: int) -> "NeuronIndex":
        """Ranks [start, start + width): a sliding-window control."""
        if start < 0 or width < 0:
            raise NeuronIndexError(f"rank window needs start >= 0 and width >= 0, got [{start}, {start}+{width})")
        return self._take(np.arange(start, min(start + width, len(self))))

    def only(self, *modules: str) -> "NeuronIndex":
        """Restrict to some modules (e.g. ``mlp``)."""
        return self._take(np.flatnonzero(np.isin(self.module, modules)))

    def keys(self) -> list[tuple[int, str, int]]:
        """The (layer, module, neuron) triples in rank order."""
        return list(zip(self.layer.tolist(), self.module.tolist(), self.neuron.tolist()))

    def intersect(self, other: "NeuronIndex") -> "NeuronIndex":
        """Neurons in both indexes, in this index's rank order."""
        theirs = set(other.keys())
        return self._take(np.array([i for i, key in enumerate(self.keys()) if key in theirs], dtype=np.int64),
                          combined_with=other.meta.get("method"), set_op="intersect")

    def difference(self, other: "NeuronIndex") -> "NeuronIndex":
        """Neurons of this index that the other lacks (e.g. safety minus foundation)."""
        theirs = set(other.keys())
        return self._take(np.array([i for i, key in enumerate(self.keys()) if key not in theirs], dtype=np.int64),
                          combined_with=other.meta.get("method"), set_op="difference")

    def per_layer_counts(self) -> dict[str, list[int]]:
        """Neurons per layer for each module present."""
        num_layers = self.num_layers
        return {m: np.bincount(self.layer[self.module == m].astype(np.int64), minlength=num_layers).tolist()
                for m in MODULES if (self.module == m).any()}

    def random_like(self, seed: int) -> "NeuronIndex":
        """A control: random neurons with the same per-layer, per-module counts (seeded)."""
        rng = np.random.default_rng(seed)
        sites = self.sites
        layers, modules, neurons = [], [], []
        for module, counts in self.per_layer_counts().items():
            for layer, count in enumerate(counts):
                if count:
                    layers.append(np.full(count, layer))
                    modules.append(np.full(count, module, dtype=object))
                    neurons.append(np.sort(rng.choice(sites[module], size=count, replace=False)))
        if not layers:
            return self._take(np.array([], dtype=np.int64), control="random", control_seed=seed)
        layer, module, neuron = np.concatenate(layers), np.concatenate(modules), np.concatenate(neurons)
        order = rng.permutation(len(layer))
        return NeuronIndex(layer[order], module[order], neuron[order], np.zeros(len(layer), np.float32),
                           dict(self.meta, control="random", control_seed=seed))

    def magnitude_matched_like(self, magnitude: Mapping[str, torch.Tensor], seed: int,
                               window: int = 8) -> "NeuronIndex":
        """A control matched on activation magnitude: for each neuron (largest magnitude first), a random one of the
        ``window`` unused neurons of its layer and module, outside this index, nearest to it in log magnitude
        (seeded). Zeroing a massive-activation neuron breaks a model whatever it encodes; this control breaks it as
        much, so a gap to it is about *which* neurons."""
        if window < 1:
            raise NeuronIndexError(f"magnitude-matched control: window must be >= 1, got {window}")
        rng = np.random.default_rng(seed)
        layers, modules, neurons = [], [], []
        for module, counts in self.per_layer_counts().items():
            if module not in magnitude:
                raise NeuronIndexError(f"magnitude-matched control: no magnitudes for module {module!r}")
            mag = np.log(np.asarray(torch.as_tensor(magnitude[module]).double().cpu()).clip(min=1e-30))
            if mag.shape != (self.num_layers, self.sites[module]):
                raise NeuronIndexError(f"magnitude-matched control: {module} magnitudes have shape {mag.shape}, the "
                                       f"index's model has {(self.num_layers, self.sites[module])}")
            for layer, count in enumerate(counts):
                if not count:
                    continue
                chosen = self.neuron[(self.module == module) & (self.layer == layer)].astype(np.int64)
                free = np.setdiff1d(np.arange(self.sites[module]), chosen)
                if len(free) < count:
                    raise NeuronIndexError(f"magnitude-matched control: layer {layer} {module} has {count} indexed "
                                           f"neurons and only {len(free)} others to match them with")
                for target in chosen[np.argsort(-mag[layer, chosen], kind="stable")]:
                    nearest = np.argsort(np.abs(mag[layer, free] - mag[layer, target]), kind="stable")[:window]
                    pick = int(rng.choice(nearest))
                    neurons.append(free[pick])
                    free = np.delete(free, pick)
                layers.append(np.full(count, layer))
                modules.append(np.full(count, module, dtype=object))
        meta = dict(self.meta, control="magnitude", control_seed=seed, control_window=window)
        if not layers:
            return self._take(np.array([], dtype=np.int64), **meta)
        return NeuronIndex(np.concatenate(layers), np.concatenate(modules), np.array(neurons, dtype=np.int32),
                           np.zeros(len(neurons), np.float32), meta)

    def masks(self, dtype=torch.bool) -> dict[str, torch.Tensor]:
        """Dense ``[layers, neurons]`` masks per module present."""
        out = {}
        for module in MODULES:
            sel = self.module == module
            if sel.any():
                mask = torch.zeros(self.num_layers, self.sites[module], dtype=dtype)
                mask[torch.from_numpy(self.layer[sel].astype(np.int64)), torch.from_numpy(self.neuron[sel].astype(np.int64))] = 1
                out[module] = mask
        return out

    def by_layer(self, module: str = "mlp") -> dict[int, torch.Tensor]:
        """Sorted neuron ids per layer for one module: what hooks need."""
        sel = self.module == module
        out: dict[int, torch.Tensor] = {}
        for layer in np.unique(self.layer[sel]).tolist():
            ids = np.sort(self.neuron[sel & (self.layer == layer)]).astype(np.int64)
            out[int(layer)] = torch.from_numpy(ids)
        return out

    # ---------------------------------------------------------------- model fit
    @property
    def shape(self) -> dict:
        shape = self.meta.get("shape")
        if not shape:
            raise NeuronIndexError("neuron index metadata has no model 'shape'; cannot check it against a model")
        return shape

    @property
    def num_layers(self) -> int:
        return int(self.shape["num_layers"])

    @property
    def sites(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.shape["sites"].items()}

    @property
    def total_sites(self) -> int:
        """Neurons a ranking could cover (all layers, the modules present)."""
        present = set(self.module.tolist()) or {"mlp"}
        return self.num_layers * sum(self.sites[m] for m in present)

    def check_fits(self, model_config, origin: str = "neuron index") -> None:
        """Refuse an index made for another model shape, before any compute."""
        from .archs import model_shape

        want, have = model_shape(model_config), self.shape
        if (want["num_layers"], want["sites"]) != (have["num_layers"], {k: int(v) for k, v in have["sites"].items()}):
            raise NeuronIndexError(
                f"{origin} was made for a model with {have['num_layers']} layers and sites {have['sites']}, "
                f"but this model has {want['num_layers']} layers and sites {want['sites']}"
            )
        if len(self) and (self.layer.max() >= want["num_layers"] or self.layer.min() < 0):
            raise NeuronIndexError(f"{origin}: layer ids out of range for a {want['num_layers']}-layer model")
        for module in set(self.module.tolist()):
            if self.neuron[self.module == module].max() >= want["sites"][module]:
                raise NeuronIndexError(f"{origin}: {module} neuron ids out of range ({want['sites'][module]} per layer)")

    # ---------------------------------------------------------------- storage
    def to_arrow(self):
        import pyarrow as pa

        table = pa.table({
            "layer": pa.array(self.layer, pa.int16()),
            "module": pa.array(self.module.tolist(), pa.string()),
            "neuron": pa.array(self.neuron, pa.int32()),
            "score": pa.array(self.score, pa.float32()),
            "rank": pa.array(np.arange(len(self), dtype=np.int32), pa.int32()),
        })
        return table.replace_schema_metadata({META_KEY: json.dumps(self.meta, sort_keys=True).encode()})

    def write(self, path: str | os.PathLike) -> Path:
        """Parquet (sorted by rank) plus a JSON sidecar with the metadata."""
        from .atomic import write_json
        from .data import write_table

        path = Path(path)
        write_table(self.to_arrow(), path)
        write_json(self.meta, sidecar_path(path))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "NeuronIndex":
        """Load an index written by :meth:`write` (or any Parquet with the same columns)."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise NeuronIndexError(f"neuron index {path} does not exist")
        table = pq.read_table(path)
        missing = {"layer", "module", "neuron", "score"} - set(table.column_names)
        if missing:
            raise NeuronIndexError(f"neuron index {path}: missing column(s) {sorted(missing)}")
        raw = (table.schema.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else {}
        if not meta and sidecar_path(path).exists():
            meta = read_json(sidecar_path(path))
        if "rank" in table.column_names:
            table = table.sort_by("rank")
        return cls(table.column("layer").to_numpy(), np.asarray(table.column("module").to_pylist(), dtype=object),
                   table.column("neuron").to_numpy(), table.column("score").to_numpy(), meta)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``neurons/contrast.parquet`` -> ``neurons/contrast.json``."""
    return Path(path).with_suffix(".json")


def as_k(value: int | float) -> int | float:
    """A config k as the type ``resolve_k`` reads: a whole count as int (2.0 -> 2), a fraction as float; 1.5 is an
    error, never silently truncated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise NeuronIndexError(f"k must be a count >= 0 or a fraction in (0, 1), got {value!r}")
    if value >= 1 and float(value) != int(value):
        raise NeuronIndexError(f"k must be a whole count or a fraction below 1, got {value!r}")
    return int(value) if value >= 1 or isinstance(value, int) else float(value)


def resolve_k(k: int | float, total: int) -> int:
    """A neuron count from an int count or a fraction (0 < k < 1) of all neurons; a count above ``total`` is an
    error (it is never cut down to fit)."""
    k = as_k(k)
    if isinstance(k, float):
        return int(round(k * total))
    if k > total:
        raise NeuronIndexError(f"k = {k} exceeds the {total} neurons there are")
    return k
