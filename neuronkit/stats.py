"""Streaming reducers for paired activations: memory is ``[L, N]`` whatever the number of tokens.

Per layer and neuron we keep the token count, Welford mean and M2 for model A and model B, and
the sum of squared differences ``sum_t (h_A - h_B)^2``. Batches merge with Chan's parallel
update, in float64, so the result does not depend on how tokens are split into batches (up
to float rounding).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

STAT_KEYS = ("count", "mean_a", "m2_a", "mean_b", "m2_b", "sumsq_diff")


@dataclass
class PairedStats:
    """Running statistics of two models' activations at the same tokens, per layer and neuron."""

    count: torch.Tensor  # [L, N] float64 (the same for every neuron of a layer)
    mean_a: torch.Tensor
    m2_a: torch.Tensor
    mean_b: torch.Tensor
    m2_b: torch.Tensor
    sumsq_diff: torch.Tensor

    @classmethod
    def zeros(cls, layers: int, neurons: int) -> "PairedStats":
        return cls(*(torch.zeros(layers, neurons, dtype=torch.float64) for _ in STAT_KEYS))

    def update(self, layer: int, h_a: torch.Tensor, h_b: torch.Tensor) -> None:
        """Fold in ``[tokens, N]`` activations of both models at the same tokens."""
        if h_a.shape != h_b.shape:
            raise ValueError(f"paired activations differ in shape: {tuple(h_a.shape)} vs {tuple(h_b.shape)}")
        n_new = h_a.shape[0]
        if n_new == 0:
            return
        a, b = h_a.double(), h_b.double()
        n_old = self.count[layer]
        total = n_old + n_new
        for mean, m2, x in ((self.mean_a, self.m2_a, a), (self.mean_b, self.m2_b, b)):
            batch_mean = x.mean(0)
            batch_m2 = ((x - batch_mean) ** 2).sum(0)
            delta = batch_mean - mean[layer]
            mean[layer] += delta * n_new / total
            m2[layer] += batch_m2 + delta ** 2 * n_old * n_new / total
        self.sumsq_diff[layer] += ((a - b) ** 2).sum(0)
        self.count[layer] = total

    def rms_change(self) -> torch.Tensor:
        """The change score ``sqrt(mean_t (h_A - h_B)^2)`` (an RMS, not normalised)."""
        return torch.sqrt(self.sumsq_diff / self.count.clamp(min=1))

    def std(self, which: str = "a") -> torch.Tensor:
        """Per-neuron sample standard deviation of model A or B."""
        m2 = self.m2_a if which == "a" else self.m2_b
        return torch.sqrt(m2 / (self.count - 1).clamp(min=1))

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        """safetensors ``[L, N]`` tensors named as in the artifact contract (metadata as one JSON string)."""
        from safetensors.torch import save_file

        from .atomic import atomic_file

        header = {"neuronkit": json.dumps(metadata or {}, sort_keys=True)}  # one key: stable header bytes
        with atomic_file(path) as tmp:
            save_file({k: getattr(self, k).contiguous() for k in STAT_KEYS}, str(tmp), metadata=header)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PairedStats":
        from .artifacts import read_safetensors

        tensors = read_safetensors(path)
        missing = [k for k in STAT_KEYS if k not in tensors]
        if missing:
            raise ValueError(f"activation statistics {path}: missing tensors {missing}")
        return cls(*(tensors[k] for k in STAT_KEYS))
