"""Load any dataset source (builtin, Hugging Face hub, csv/json/jsonl/parquet) into one Parquet schema.

Every prepared dataset has exactly the columns of ``SCHEMA``, so later stages never care where
the rows came from. Bad input raises ``DatasetError`` whose message names the dataset, the file
(or source string) and, for row problems, the 0-based row index in the source, so a user can fix
the config or the file before any compute starts.

Mapping rules (``DatasetSpec.columns``: schema column -> source column):

* ``prompt`` defaults to the source column ``prompt``; every other column is taken only when mapped.
* ``"col[0]"`` takes element 0 of a list column (``{"chosen": "response[0]"}``).
* ``id`` defaults to ``f"{name}-{i:05d}"`` with ``i`` the row's index in the source (before
  filtering), so ids stay stable when ``where``/``n``/``shuffle_seed`` change.
* Source values are compared as text in ``where`` and ``label_map`` (``1`` matches ``"1"``).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("response", pa.string()),
    pa.field("chosen", pa.string()),
    pa.field("rejected", pa.string()),
    pa.field("label", pa.string(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("source", pa.string(), nullable=False),
])
LABELS = ("harmful", "benign", "task")
COMPRESSION = "zstd"
FILE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
# builtin source -> (function name in builtin_data or task, automatic label; None: each row carries its own label)
BUILTINS = {
    "builtin:harmful": ("harmful_requests", "harmful"),
    "builtin:benign": ("benign_instructions", "benign"),
    "builtin:borderline": ("borderline_benign", "benign"),
    "builtin:contrast": ("borderline_contrasts", None),
    "builtin:sentiment": ("sentiment_rows", "task"),
}
TEXT_COLUMNS = ("response", "chosen", "rejected", "category")
# schema columns a spec may map, plus "input" (the Alpaca input field that join_input appends)
MAPPABLE = ("id", "prompt", *TEXT_COLUMNS, "label", "input")
ELEMENT_COLUMN = re.compile(r"^(?P<col>.+)\[(?P<idx>-?\d+)\]$")
# The model-independent token count of max_prompt_tokens: words and single punctuation marks (subword tokenizers
# give about 1.2-1.5x as many for English text).
_PROMPT_TOKEN = re.compile(r"\w+|[^\w\s]")


class DatasetError(ValueError):
    """Bad dataset input; the message names the dataset, the file and the row."""


def dataset_error(name: str, origin: Any, message: str, row: int | None = None) -> DatasetError:
    """One message layout for every problem, so users always see dataset, file and row."""
    where = f"dataset {name!r} ({origin})" + (f", row {row}" if row is not None else "")
    return DatasetError(f"{where}: {message}")


def _as_tuple(name: str, key: str, values: Any) -> tuple[str, ...]:
    """``where`` values as a tuple of text (a lone string is one value, not its characters)."""
    if isinstance(values, (str, int, float, bool)):
        return (str(values),)
    if isinstance(values, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in values)
    raise DatasetError(f"dataset {name!r}: where.{key} must be a list of values, got {type(values).__name__}")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and how its columns map onto ``SCHEMA`` (one entry of ``datasets:``)."""

    name: str
    source: str
    split: str | None = None
    subset: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None
    label_map: Mapping[str, str] = field(default_factory=dict)
    where: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    n: int | None = None
    shuffle_seed: int | None = None
    join_input: bool = False
    max_prompt_tokens: int = 2048     # counted as words and punctuation marks (model-independent)
    truncate_prompts: bool = False    # cut a longer prompt instead of refusing the dataset

    def __post_init__(self) -> None:
        """Reject a malformed spec at construction, before any file is read."""
        object.__setattr__(self, "where", {str(k): _as_tuple(self.name, k, v) for k, v in self.where.items()})
        for problem in self._problems():
            raise dataset_error(self.name, self.source, problem)

    def _problems(self) -> list[str]:
        """Every reason this spec cannot be loaded (empty when it is fine)."""
        out = []
        if not isinstance(self.source, str) or not self.source:
            out.append("source must be a non-empty string")
        bad = sorted(set(self.columns) - set(MAPPABLE))
        if bad:
            out.append(f"columns cannot map {bad}; mappable columns: {', '.join(MAPPABLE)} "
                       "(the 'source' column is always the source string)")
        out += [f"columns.{k} must name a source column" for k, v in self.columns.items()
                if not isinstance(v, str) or not v]
        if self.source in BUILTINS and self.split is None:
            out.append("builtin sources need a split: train or test")
        if self.label is not None and self.label not in LABELS:
            out.append(f"label {self.label!r} is not one of {LABELS}")
        out += [f"label_map[{k!r}] = {v!r} is not one of {LABELS}"
                for k, v in self.label_map.items() if v not in LABELS]
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1):
            out.append(f"n must be a positive integer or null, got {self.n!r}")
        if isinstance(self.max_prompt_tokens, bool) or not isinstance(self.max_prompt_tokens, int) \
                or self.max_prompt_tokens < 1:
            out.append(f"max_prompt_tokens must be a positive integer, got {self.max_prompt_tokens!r}")
        if self.shuffle_seed is not None and (isinstance(self.shuffle_seed, bool)
                                              or not isinstance(self.shuffle_seed, int) or self.shuffle_seed < 0):
            out.append(f"shuffle_seed must be a non-negative integer or null, got {self.shuffle_seed!r}")
        return out

    @classmethod
    def from_config(cls, name: str, cfg: Mapping) -> "DatasetSpec":
        """Build a spec from one ``datasets:`` config entry; unknown keys are errors, nulls mean defaults."""
        if not isinstance(cfg, Mapping):
            raise DatasetError(f"dataset {name!r}: config entry must be a mapping, got {type(cfg).__name__}")
        known = [f.name for f in fields(cls) if f.name != "name"]
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise DatasetError(f"dataset {name!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                               f"allowed keys: {', '.join(known)}")
        if not cfg.get("source"):
            raise DatasetError(f"dataset {name!r}: 'source' is required")
        kw = dict(cfg)
        kw["columns"] = {str(k): str(v) for k, v in (cfg.get("columns") or {}).items()}
        kw["label_map"] = {str(k): v for k, v in (cfg.get("label_map") or {}).items()}
        kw["where"] = {str(k): _as_tuple(name, k, v) for k, v in (cfg.get("where") or {}).items()}
        kw["join_input"] = bool(cfg.get("join_input") or False)
        return cls(name=name, **kw)


# ----------------------------------------------------------------------------- reading sources

def _local_path(spec: DatasetSpec, base_dir: str | os.PathLike) -> Path:
    """A local source path; relative paths are relative to the config's directory (base_dir)."""
    path = Path(spec.source).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else Path(base_dir) / path))


def origin_of(spec: DatasetSpec, base_dir: str | os.PathLike = ".") -> str:
    """What error messages call the source: the resolved file path, or the source string."""
    if spec.source.startswith(("builtin:", "hf:")):
        return spec.source
    return str(_local_path(spec, base_dir))


def _load_builtin(spec: DatasetSpec) -> list[dict]:
    """Rows of a builtin set; imported lazily so the data module stays light (by a plain import statement, so that
    ``codehash`` sees the dependency)."""
    from . import builtin_data, task

    func_name = BUILTINS[spec.source][0]
    func = getattr(builtin_data, func_name, None) or getattr(task, func_name)
    try:
        rows = func(spec.split)
    except (ValueError, KeyError) as exc:
        raise dataset_error(spec.name, spec.source, f"cannot load builtin split {spec.split!r}: {exc}") from exc
    return [dict(r) for r in rows]


def _load_hf(spec: DatasetSpec) -> list[dict]:
    """Rows of a Hugging Face hub dataset; offline machines get an explicit hint."""
    hub_id = spec.source[len("hf:"):]
    if not hub_id:
        raise dataset_error(spec.name, spec.source, "hf: source needs a hub id, e.g. hf:walledai/AdvBench")
    try:
        import datasets

        loaded = datasets.load_dataset(hub_id, spec.subset, split=spec.split)
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure becomes one clear message
        raise dataset_error(spec.name, spec.source,
                            f"could not load Hugging Face dataset {hub_id!r} (subset={spec.subset!r}, "
                            f"split={spec.split!r}): {type(exc).__name__}: {exc}. This machine may be offline "
                            "(HF_HUB_OFFLINE=1): download the dataset once where the hub is reachable, or point "
                            "'source' at a local file") from exc
    return [dict(r) for r in _one_split(spec, loaded)]


def _one_split(spec: DatasetSpec, loaded: Any) -> Any:
    """A DatasetDict (no split given) is accepted only when it holds a single split."""
    if not isinstance(loaded, Mapping):
        return loaded
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    raise dataset_error(spec.name, spec.source,
                        f"the hub dataset has splits {sorted(loaded)}; set 'split' to one of them")


def _read_text(spec: DatasetSpec, path: Path) -> str:
    """File text as UTF-8, with decoding problems reported against the file."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise dataset_error(spec.name, path, f"not UTF-8 text at line {line} of the file, byte {column} of that line "
                                      f"({raw[exc.start:exc.start + 4]!r}); save the file as UTF-8") from exc


def _objects(spec: DatasetSpec, path: Path, items: list) -> list[dict]:
    """Check that every JSON item is an object (a row)."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise dataset_error(spec.name, path, f"expected a JSON object, got {type(item).__name__}", row=i)
    return items


def _read_csv(spec: DatasetSpec, path: Path) -> list[dict]:
    """CSV rows with every cell kept as text and empty cells as None."""
    import io

    import pandas as pd

    text = _read_text(spec, path)  # names the line of a byte that is not UTF-8 (pandas gives a buffer position)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise dataset_error(spec.name, path, f"cannot parse CSV: {exc}") from exc
    return [{str(k): (v if v != "" else None) for k, v in rec.items()} for rec in frame.to_dict("records")]


def _read_json(spec: DatasetSpec, path: Path) -> list[dict]:
    """A JSON list of objects, or an object holding exactly one such list."""
    try:
        data = json.loads(_read_text(spec, path))
    except json.JSONDecodeError as exc:
        raise dataset_error(spec.name, path,
                            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise dataset_error(spec.name, path, "expected a JSON list of objects (or an object holding one such list)")
    return _objects(spec, path, data)


def _read_jsonl(spec: DatasetSpec, path: Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped, a bad line is reported by its 1-based number."""
    rows = []
    for lineno, line in enumerate(_read_text(spec, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise dataset_error(spec.name, path, f"line {lineno}: invalid JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise dataset_error(spec.name, path, f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append(obj)
    return rows


def _read_parquet(spec: DatasetSpec, path: Path) -> list[dict]:
    """Parquet rows as Python dicts."""
    try:
        return read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise dataset_error(spec.name, path, f"cannot read Parquet: {exc}") from exc


_READERS: dict[str, Callable[[DatasetSpec, Path], list[dict]]] = {
    ".csv": _read_csv, ".json": _read_json, ".jsonl": _read_jsonl, ".parquet": _read_parquet,
}


def load_rows(spec: DatasetSpec, base_dir: str | os.PathLike = ".") -> list[dict]:
    """The raw source rows, in source order; relative file paths resolve against base_dir."""
    if spec.source in BUILTINS:
        return _load_builtin(spec)
    if spec.source.startswith("builtin:"):
        raise dataset_error(spec.name, spec.source, f"unknown builtin source; expected one of {sorted(BUILTINS)}")
    if spec.source.startswith("hf:"):
        return _load_hf(spec)
    path = _local_path(spec, base_dir)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise dataset_error(spec.name, path,
                            f"unknown file type {path.suffix or '(none)'!r} of {str(path)!r}; expected "
                            f"{', '.join(sorted(BUILTINS))}, hf:<hub id>, or a file ending {', '.join(FILE_SUFFIXES)}")
    if not path.is_file():
        raise dataset_error(spec.name, path, f"no such file: {str(path)!r}")
    return reader(spec, path)


def local_source(spec: DatasetSpec, base_dir: str | os.PathLike = ".") -> Path | None:
    """The file a dataset reads (None for builtin and hub sources), so rules can depend on it."""
    if spec.source.startswith(("builtin:", "hf:")):
        return None
    return _local_path(spec, base_dir)


def _source_columns(spec: DatasetSpec, path: Path) -> list[str] | None:
    """Column names of a local file, reading as little as possible (None when the format has no fixed header)."""
    import csv

    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return next(csv.reader(fh), [])
        except UnicodeDecodeError as exc:
            raise dataset_error(spec.name, path, f"not UTF-8 text: {exc}") from exc
    if suffix == ".parquet":
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise dataset_error(spec.name, path, f"cannot read Parquet: {exc}") from exc
    return None


def check_source(spec: DatasetSpec, base_dir: str | os.PathLike = ".") -> None:
    """Before any job runs: a local source file exists and has every column the spec maps or filters on."""
    path = local_source(spec, base_dir)
    if path is None:
        return
    if path.suffix.lower() not in _READERS:
        raise dataset_error(spec.name, path, f"unknown file type {path.suffix or '(none)'!r}; expected a file ending "
                            f"{', '.join(FILE_SUFFIXES)}")
    if not path.is_file():
        raise dataset_error(spec.name, path, f"no such file: {str(path)!r}")
    have = _source_columns(spec, path)
    if have is None:
        return
    wanted = {**{f"columns.{k}": ELEMENT_COLUMN.sub(r"\g<col>", v) for k, v in column_plan(spec)[0].items()},
              **{f"where.{k}": k for k in spec.where}}
    missing = {key: col for key, col in wanted.items() if col not in have}
    if missing:
        listed = ", ".join(f"{col!r} (for {key})" for key, col in sorted(missing.items()))
        raise dataset_error(spec.name, path, f"missing column(s) {listed}; the file has {have}")


# ----------------------------------------------------------------------------- mapping into SCHEMA

def column_plan(spec: DatasetSpec) -> tuple[dict[str, str], str | None]:
    """Effective column mapping and constant label (builtin sources bring their own defaults)."""
    columns, label = {"prompt": "prompt", **spec.columns}, spec.label
    builtin = BUILTINS.get(spec.source)
    if builtin:
        gold = {"response": "response"} if builtin[1] == "task" else {}  # the task's gold answer
        own_label = {"label": "label"} if builtin[1] is None and label is None else {}
        columns = {"id": "id", "category": "category", **gold, **own_label, **columns}
        if label is None and "label" not in columns:
            label = builtin[1]
    return columns, label


def _check_label_plan(spec: DatasetSpec, origin: str, columns: Mapping[str, str], label: str | None) -> None:
    """Exactly one way to get a label: a constant or a mapped label column (label_map needs the column)."""
    if label is None and "label" not in columns:
        raise dataset_error(spec.name, origin, f"no label: set 'label' to one of {LABELS} or map a label column "
                            "(columns: {label: <column>}, with label_map if its values differ)")
    if label is not None and "label" in columns:
        raise dataset_error(spec.name, origin, "set either 'label' or columns.label, not both")
    if spec.label_map and "label" not in columns:
        raise dataset_error(spec.name, origin, "label_map needs a mapped label column (columns: {label: <column>})")


def _available(rows: list[dict]) -> list[str]:
    """Every column name seen in any row, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _ref(ref: str, available: list[str]) -> tuple[str, int | None]:
    """Parse ``col`` or ``col[i]`` (a literal column name that looks like ``col[i]`` wins)."""
    match = ELEMENT_COLUMN.match(ref)
    if ref in available or match is None:
        return ref, None
    return match["col"], int(match["idx"])


@dataclass(frozen=True)
class _Mapper:
    """Everything needed to turn one source row into one SCHEMA record."""

    spec: DatasetSpec
    origin: str
    refs: Mapping[str, tuple[str, int | None]]
    where: Mapping[tuple[str, int | None], tuple[str, ...]]
    label: str | None

    def fail(self, message: str, row: int | None = None) -> DatasetError:
        """A DatasetError about this dataset (and row)."""
        return dataset_error(self.spec.name, self.origin, message, row)

    def value(self, i: int, row: dict, ref: tuple[str, int | None]) -> Any:
        """The source value a reference points at (``None`` when the row lacks it)."""
        col, idx = ref
        value = row.get(col)
        if idx is None or value is None:
            return value
        if not isinstance(value, (list, tuple)):
            raise self.fail(f"column {col!r} holds {type(value).__name__}, not a list, so {col}[{idx}] is undefined", i)
        if not -len(value) <= idx < len(value):
            raise self.fail(f"column {col!r} has {len(value)} element(s); {col}[{idx}] is out of range", i)
        return value[idx]

    def text(self, i: int, row: dict, column: str) -> str | None:
        """A mapped column's value as text (None when unmapped or missing)."""
        if column not in self.refs:
            return None
        value = self.value(i, row, self.refs[column])
        try:
            return _text(value)
        except TypeError:
            raise self.fail(f"{column} (source {self.refs[column][0]!r}) holds {type(value).__name__}, not text", i)

    def keeps(self, i: int, row: dict) -> bool:
        """Whether a row passes every ``where`` filter (values compared as text)."""
        return all(_key(self.value(i, row, ref)) in allowed for ref, allowed in self.where.items())

    def prompt(self, i: int, row: dict) -> str:
        """The prompt, non-empty text; with join_input the Alpaca input is appended after a blank line."""
        value = self.value(i, row, self.refs["prompt"])
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if value is None else f"{value!r} ({type(value).__name__})"
            raise self.fail(f"prompt (source column {self.refs['prompt'][0]!r}) must be non-empty text, got {shown}", i)
        extra = self.text(i, row, "input") if self.spec.join_input else None
        return self.bounded(i, value + "\n\n" + extra if extra and extra.strip() else value)

    def bounded(self, i: int, prompt: str) -> str:
        """The prompt within ``max_prompt_tokens``: refused when longer, or cut with ``truncate_prompts``."""
        limit = self.spec.max_prompt_tokens
        tokens = list(_PROMPT_TOKEN.finditer(prompt))
        if len(tokens) <= limit:
            return prompt
        if self.spec.truncate_prompts:
            return prompt[: tokens[limit - 1].end()]
        raise self.fail(f"prompt is {len(tokens)} tokens long (words and punctuation marks; {len(prompt)} characters), "
                        f"over max_prompt_tokens = {limit}: shorten it, raise max_prompt_tokens, or set "
                        "truncate_prompts: true", i)

    def label_of(self, i: int, row: dict) -> str:
        """The constant label, or the row's label column through label_map; must be one of LABELS."""
        if self.label is not None:
            return self.label
        raw = _key(self.value(i, row, self.refs["label"]))
        if raw is None:
            raise self.fail(f"label (source column {self.refs['label'][0]!r}) is missing", i)
        label = self.spec.label_map.get(raw, raw)
        if label not in LABELS:
            raise self.fail(f"label {raw!r} is not one of {LABELS}" + (f" after label_map {dict(self.spec.label_map)}"
                            if self.spec.label_map else "; map it with label_map"), i)
        return label

    def record(self, i: int, row: dict) -> dict:
        """One SCHEMA record for source row i."""
        rec = {"id": self.id_of(i, row), "prompt": self.prompt(i, row)}
        rec.update({col: self.text(i, row, col) for col in TEXT_COLUMNS})
        rec.update(label=self.label_of(i, row), source=self.spec.source)
        return rec

    def id_of(self, i: int, row: dict) -> str:
        """The mapped id as text, or ``name-00042`` from the source row index."""
        if "id" not in self.refs:
            return f"{self.spec.name}-{i:05d}"
        value = self.text(i, row, "id")
        if value is None or not value.strip():
            raise self.fail(f"id (source column {self.refs['id'][0]!r}) is missing", i)
        return value


def _text(value: Any) -> str | None:
    """Scalars as text, NaN/None as None; lists and objects raise TypeError."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float, np.generic)):
        return str(value.item() if isinstance(value, np.generic) else value)
    raise TypeError(type(value).__name__)


def _key(value: Any) -> str | None:
    """A value as text for comparisons (non-scalars as canonical JSON)."""
    try:
        return _text(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


def _mapper(spec: DatasetSpec, rows: list[dict], origin: str) -> _Mapper:
    """Resolve every column reference against the file's columns; missing ones are one clear error."""
    columns, label = column_plan(spec)
    _check_label_plan(spec, origin, columns, label)
    if spec.join_input:
        columns.setdefault("input", "input")
    elif "input" in columns:
        raise dataset_error(spec.name, origin, "columns.input is only used with join_input: true")
    available = _available(rows)
    refs = {col: _ref(src, available) for col, src in columns.items()}
    where = {_ref(src, available): allowed for src, allowed in spec.where.items()}
    missing = sorted({col for col, _ in [*refs.values(), *where]} - set(available))
    if missing:
        raise dataset_error(spec.name, origin, f"column(s) {', '.join(map(repr, missing))} not found; "
                            f"available columns: {', '.join(map(repr, available))}")
    return _Mapper(spec, origin, refs, where, label)


def _select(mapper: _Mapper, rows: list[dict]) -> list[int]:
    """Source indices kept: ``where`` filter, then optional seeded shuffle, then the first n."""
    spec = mapper.spec
    keep = [i for i, row in enumerate(rows) if mapper.keeps(i, row)]
    if not keep:
        filters = {k: list(v) for k, v in spec.where.items()}
        raise mapper.fail(f"the dataset is empty: no rows left after where={filters}")
    if spec.shuffle_seed is not None:
        keep = [keep[j] for j in np.random.default_rng(spec.shuffle_seed).permutation(len(keep))]
    return keep[:spec.n] if spec.n is not None else keep


def _check_unique(mapper: _Mapper, records: list[dict], picked: list[int]) -> None:
    """Ids identify rows across every later artifact, so duplicates are errors."""
    first: dict[str, int] = {}
    for i, rec in zip(picked, records):
        if rec["id"] in first:
            raise mapper.fail(f"duplicate id {rec['id']!r} (also in row {first[rec['id']]})", i)
        first[rec["id"]] = i


def to_table(spec: DatasetSpec, rows: list[dict], origin: str) -> pa.Table:
    """Map and validate source rows into SCHEMA; origin (file path or source) is named in errors."""
    if not rows:
        raise dataset_error(spec.name, origin, "the dataset is empty: the source has no rows")
    mapper = _mapper(spec, rows, origin)
    picked = _select(mapper, rows)
    records = [mapper.record(i, rows[i]) for i in picked]
    _check_unique(mapper, records, picked)
    return pa.Table.from_pylist(records, schema=SCHEMA)


def load_dataset(spec: DatasetSpec, base_dir: str | os.PathLike = ".") -> pa.Table:
    """One configured dataset as a SCHEMA table (load_rows + to_table)."""
    return to_table(spec, load_rows(spec, base_dir), origin_of(spec, base_dir))


# ----------------------------------------------------------------------------- Parquet I/O

def write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write atomically (``atomic.atomic_file``) with deterministic bytes."""
    from .atomic import atomic_file

    with atomic_file(path) as tmp:
        pq.write_table(table, str(tmp), compression=COMPRESSION)


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read one Parquet artifact (``artifacts.read_parquet``: a corrupt file is named, with how to rebuild it)."""
    from .artifacts import read_parquet

    return read_parquet(path)
