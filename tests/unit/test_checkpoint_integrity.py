"""Checkpoints are verified on load: a changed weight file or an edited manifest is refused, parents included, and
nothing that can run code is read from a manifest."""

from __future__ import annotations

import json
import shutil

import pytest

from neuronkit import manifest
from neuronkit.manifest import CheckpointError
from neuronkit.models import load_variant
from neuronkit.modelspec import REMOTE_CODE_ENV
from neuronkit.tune import AdapterConfig, TrainConfig, sft_examples, train_adapter


@pytest.fixture
def chain(tiny_base, tmp_path):
    """A private copy of the tiny base and one SFT adapter on it."""
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    cfg = TrainConfig(method="sft", learning_rate=5e-2, max_steps=1, batch_size=2, max_length=64,
                      adapter=AdapterConfig(r=2, alpha=4))
    sft = train_adapter(base, tmp_path / "sft", sft_examples(["a b", "c d"], ["e f", "g h"]), cfg,
                        model_name="tiny", variant_name="sft")
    return base, sft


def test_a_written_checkpoint_records_every_file_and_loads(chain):
    base, sft = chain
    var = manifest.read(sft)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(var.files) and var.checksum
    assert var.files["adapter_model.safetensors"] == manifest.sha256_file(sft / "adapter_model.safetensors")
    load_variant(sft)  # verifies without complaint


def test_flipped_bytes_in_a_weight_file_are_refused_with_the_file_and_the_rebuild_command(chain):
    _, sft = chain
    weights = sft / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # inside the last tensor's values
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{weights}: its sha256 differs.*--forcerun {sft}"):
        load_variant(sft)


def test_a_damaged_parent_is_refused_when_the_child_loads(chain):
    base, sft = chain
    (base / "config.json").write_text((base / "config.json").read_text().replace("llama", "llama", 1) + " ")
    with pytest.raises(CheckpointError, match=rf"{base / 'config.json'}"):
        load_variant(sft)


def test_an_edited_manifest_is_refused(chain):
    base, sft = chain
    path = sft / manifest.FILENAME
    path.write_text(path.read_text().replace('"parent": "../base"', '"parent": "../elsewhere"'))
    assert '"../elsewhere"' in path.read_text()
    with pytest.raises(CheckpointError, match="was edited after the checkpoint was written"):
        load_variant(sft)


def test_trust_remote_code_is_never_taken_from_a_manifest(tmp_path, monkeypatch):
    import neuronkit.models as models

    ckpt = tmp_path / "ext"
    ckpt.mkdir()
    # an external checkpoint whose manifest (checksum recomputed, as a careful attacker would) asks for remote code
    manifest.write(ckpt, manifest.Variant(name="base", model="m", kind="external", source="org/model",
                                          params={"trust_remote_code": True, "revision": None, "dtype": "auto"}))
    assert json.loads((ckpt / manifest.FILENAME).read_text())["params"]["trust_remote_code"] is True
    seen = []
    monkeypatch.setattr(models, "_from_pretrained", lambda source, device, dtype, revision, remote: seen.append(remote))
    monkeypatch.delenv(REMOTE_CODE_ENV, raising=False)
    load_variant(ckpt)
    monkeypatch.setenv(REMOTE_CODE_ENV, "other,m")  # the workflow config turned it on for model m
    load_variant(ckpt)
    load_variant(ckpt, trust_remote_code=False)
    assert seen == [False, True, False]
