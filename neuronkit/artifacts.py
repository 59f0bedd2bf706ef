"""Reading intermediate artifacts: a missing or corrupt file is reported with its path and how to rebuild it.

Every reader of a workflow artifact (Parquet tables and neuron indexes, safetensors, JSON sections and sidecars) goes
through these functions, so a truncated or hand-edited file never surfaces as a bare library error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ArtifactError(ValueError):
    """An artifact is missing, truncated or not in its format."""


def rebuild_hint(path: str | os.PathLike) -> str:
    """How to remake one artifact (Snakemake's --forcerun takes output files and folders)."""
    return f"rebuild it with `snakemake --forcerun {path} <your target>`, or delete it and rerun"


def _fail(path, kind: str, err: Exception) -> ArtifactError:
    return ArtifactError(f"{path}: cannot read it as {kind} ({type(err).__name__}: {err}); {rebuild_hint(path)}")


def read_parquet(path: str | os.PathLike):
    """One Parquet file as a pyarrow table (no directory or partition discovery)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise ArtifactError(f"{path} does not exist; {rebuild_hint(path)}")
    try:
        with pq.ParquetFile(str(path)) as pf:
            return pf.read()
    except (pa.ArrowException, OSError) as err:
        raise _fail(path, "Parquet", err) from None


def read_safetensors(path: str | os.PathLike) -> dict:
    """Every tensor of a safetensors file, by name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ArtifactError(f"{path} does not exist; {rebuild_hint(path)}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise _fail(path, "safetensors", err) from None


def read_json(path: str | os.PathLike) -> Any:
    """One JSON file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist; {rebuild_hint(path)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, "JSON", err) from None
