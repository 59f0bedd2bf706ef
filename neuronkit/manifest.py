"""``variant.json``: what a checkpoint directory holds, where it came from, and from which inputs."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILENAME = "variant.json"
KINDS = ("full", "external", "adapter")


class ManifestError(ValueError):
    """A checkpoint directory lacks a valid variant.json."""


@dataclass
class Variant:
    """The manifest of one checkpoint directory."""

    name: str
    model: str
    kind: str
    source: str | None = None          # hub id / path / builtin for full and external kinds
    parent: str | None = None          # parent checkpoint dir, relative to this one (adapters)
    method: str | None = None          # e.g. sft, dpo
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> sha256 of its content

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ManifestError(f"variant kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "adapter" and not self.parent:
            raise ManifestError("an adapter variant needs a parent checkpoint")


def write(ckpt_dir: str | os.PathLike, variant: Variant) -> Path:
    """Write variant.json with sorted keys so identical inputs give identical bytes."""
    path = Path(ckpt_dir) / FILENAME
    path.write_text(json.dumps(asdict(variant), indent=2, sort_keys=True) + "\n")
    return path


def read(ckpt_dir: str | os.PathLike) -> Variant:
    """Read and check a checkpoint's variant.json."""
    path = Path(ckpt_dir) / FILENAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: {ckpt_dir} is not a neuronkit checkpoint directory") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from None
    try:
        return Variant(**data)
    except TypeError as err:
        raise ManifestError(f"{path}: {err}") from None


def sha256_path(path: str | os.PathLike) -> str:
    """Content hash of a file, or of every file in a directory (names included, order fixed)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        digest.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def hash_inputs(named_paths: dict[str, str | os.PathLike]) -> dict[str, str]:
    """Content hashes for a variant's inputs (datasets, parent manifests)."""
    return {name: sha256_path(p) for name, p in sorted(named_paths.items())}
