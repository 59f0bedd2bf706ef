"""``variant.json``: what a checkpoint directory holds, where it came from, and from which inputs."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
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
    files: dict[str, str] = field(default_factory=dict)   # every file of the checkpoint -> sha256 (set by write)
    checksum: str | None = None                            # sha256 of this manifest without this field (by write)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ManifestError(f"variant kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "adapter" and not self.parent:
            raise ManifestError("an adapter variant needs a parent checkpoint")


class CheckpointError(ManifestError):
    """A checkpoint's files or manifest differ from what was recorded when it was written."""


def write(ckpt_dir: str | os.PathLike, variant: Variant) -> Path:
    """Write variant.json last: the sha256 of every other file in the folder, then a checksum of the manifest itself
    (sorted keys, so identical inputs give identical bytes)."""
    ckpt = Path(ckpt_dir)
    files = {f.relative_to(ckpt).as_posix(): sha256_file(f) for f in sorted(ckpt.rglob("*"))
             if f.is_file() and f.name != FILENAME and not f.name.startswith(".")}  # not Snakemake's timestamp
    data = asdict(replace(variant, files=files, checksum=None))
    data["checksum"] = _checksum(data)
    path = ckpt / FILENAME
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def _checksum(data: dict) -> str:
    """sha256 of a manifest's content without its checksum field."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def rebuild_hint(ckpt_dir: str | os.PathLike) -> str:
    """How to remake a damaged checkpoint (Snakemake's --forcerun takes the output folder)."""
    return f"rebuild it with `snakemake --forcerun {ckpt_dir} <your target>`, or delete {ckpt_dir} and rerun"


def verify(ckpt_dir: str | os.PathLike) -> Variant:
    """The checkpoint's manifest, after checking that neither it nor any file it records was changed."""
    ckpt = Path(ckpt_dir)
    var = read(ckpt)
    if var.checksum is None:
        raise CheckpointError(f"{ckpt / FILENAME} records no file hashes (written before neuronkit verified "
                              f"checkpoints); {rebuild_hint(ckpt)}")
    if var.checksum != _checksum(asdict(var)):
        raise CheckpointError(f"{ckpt / FILENAME} was edited after the checkpoint was written (its checksum does not "
                              f"match its content); {rebuild_hint(ckpt)}")
    for name, digest in sorted(var.files.items()):
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing from checkpoint {ckpt}; {rebuild_hint(ckpt)}")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: its sha256 differs from the one recorded in {FILENAME} when the checkpoint "
                                  f"was written (the file was changed or damaged); {rebuild_hint(ckpt)}")
    return var


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


def sha256_file(path: str | os.PathLike) -> str:
    """The plain sha256 of a file's bytes (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
