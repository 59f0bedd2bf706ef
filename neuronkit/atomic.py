"""Atomic artifact writes: a file or a checkpoint folder appears whole or not at all, even after ``kill -9``.

Every writer of an artifact goes through ``atomic_file`` (one file) or ``atomic_dir`` (a checkpoint folder): the
content is written beside the target under a temporary name, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` that no other writer picks (several jobs may write beside each other)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _fsync(path: Path) -> None:
    """Flush a file's bytes to disk so the rename never exposes a half-written file after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file():
                _fsync(item)
        old = _temporary_name(path)
        if path.exists():
            os.replace(path, old)  # two renames: readers see the old folder or the new one, never a half-deleted one
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(text: str, path: str | os.PathLike) -> Path:
    """A text file, written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    """Stable JSON (sorted keys, two-space indent), written atomically; the folder is made when missing."""
    return write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)
