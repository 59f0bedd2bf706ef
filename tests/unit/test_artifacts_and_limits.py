"""Corrupt artifacts are named with how to rebuild them; over-long prompts and non-UTF-8 files are refused by row."""

from __future__ import annotations

import pyarrow as pa
import pytest

from neuronkit.artifacts import ArtifactError, read_json, read_parquet, read_safetensors
from neuronkit.data import DatasetError, DatasetSpec, load_dataset, read_table, write_table
from neuronkit.stats import PairedStats


def test_a_truncated_parquet_artifact_is_named_with_the_rebuild_command(tmp_path):
    path = tmp_path / "plnd.parquet"
    write_table(pa.table({"a": list(range(100))}), path)
    assert read_table(path).num_rows == 100
    with open(path, "r+b") as fh:
        fh.truncate(200)
    with pytest.raises(ArtifactError, match=rf"{path}: cannot read it as Parquet.*--forcerun {path}"):
        read_table(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_parquet(tmp_path / "gone.parquet")


def test_a_truncated_safetensors_artifact_is_named(tmp_path):
    path = tmp_path / "contrast.safetensors"
    stats = PairedStats.zeros(2, 4)
    stats.save(path)
    assert set(read_safetensors(path)) >= {"count", "mean_a"}
    with open(path, "r+b") as fh:
        fh.truncate(200)
    with pytest.raises(ArtifactError, match=rf"{path}: cannot read it as safetensors"):
        PairedStats.load(path)


def test_a_broken_json_section_is_named(tmp_path):
    path = tmp_path / "evaluation.json"
    path.write_text('{"figures": [')
    with pytest.raises(ArtifactError, match=rf"{path}: cannot read it as JSON"):
        read_json(path)


def _csv(tmp_path, body: bytes):
    path = tmp_path / "prompts.csv"
    path.write_bytes(body)
    return DatasetSpec.from_config("mine", {"source": str(path), "columns": {"prompt": "goal"}, "label": "harmful"})


def test_a_prompt_over_max_prompt_tokens_is_refused_with_dataset_row_and_length(tmp_path):
    spec = _csv(tmp_path, b"goal\nshort one\n" + b"word " * 3000 + b"\n")
    with pytest.raises(DatasetError, match=r"dataset 'mine' .*row 1: prompt is 3000 tokens long .*over "
                                           r"max_prompt_tokens = 2048"):
        load_dataset(spec)
    cut = DatasetSpec.from_config("mine", {"source": spec.source, "columns": {"prompt": "goal"}, "label": "harmful",
                                           "max_prompt_tokens": 3, "truncate_prompts": True})
    assert load_dataset(cut).column("prompt").to_pylist() == ["short one", "word word word"]


def test_a_non_utf8_csv_names_the_line(tmp_path):
    spec = _csv(tmp_path, b"goal\nfine\nalso fine\ncaf\xe9\n")
    with pytest.raises(DatasetError, match=r"not UTF-8 text at line 4 of the file, byte 4"):
        load_dataset(spec)


