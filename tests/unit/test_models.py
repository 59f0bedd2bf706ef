import json

import pytest
import torch

from neuronkit import manifest
from neuronkit.archs import ARCHITECTURES, UnsupportedArchitectureError, arch_for, decoder_layers, mlp_module
from neuronkit.models import chat_prompt, load_variant, materialize
from neuronkit.modelspec import ModelSpec, ModelSpecError, TinySpec


def test_tiny_materialize_writes_safetensors_and_manifest(tiny_base):
    files = {p.name for p in tiny_base.iterdir()}
    assert "model.safetensors" in files and "variant.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    var = manifest.read(tiny_base)
    assert (var.kind, var.source, var.name) == ("full", "builtin:tiny", "base")


def test_tiny_is_deterministic(tmp_path, tiny_base):
    other = materialize(ModelSpec(name="tiny", source="builtin:tiny"), tmp_path / "again")
    assert (other / "model.safetensors").read_bytes() == (tiny_base / "model.safetensors").read_bytes()


def test_load_variant_roundtrip_and_chat_format(tiny_base):
    model, tok = load_variant(tiny_base)
    assert model.config.num_hidden_layers == 2 and model.config.intermediate_size == 64
    text = chat_prompt(tok, "hello")
    assert text.endswith("<|im_start|>assistant\n") and "hello" in text
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma"])
def test_architecture_table_finds_mlp_of_each_family(tmp_path, family):
    spec = ModelSpec(name="t", source="builtin:tiny", tiny=TinySpec(model_type=family))
    out = materialize(spec, tmp_path / family)
    model, _ = load_variant(out)
    assert len(decoder_layers(model)) == 2
    down = mlp_module(model, 1, "down")
    assert down.in_features == model.config.intermediate_size


def test_unknown_architecture_is_refused_with_its_name(tmp_path, tiny_base):
    arch_dir = tmp_path / "gpt2ish"
    arch_dir.mkdir()
    for f in tiny_base.iterdir():
        (arch_dir / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((arch_dir / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (arch_dir / "config.json").write_text(json.dumps(cfg))
    manifest.write(arch_dir, manifest.read(arch_dir))  # a consistent checkpoint of an unsupported family
    with pytest.raises(UnsupportedArchitectureError, match=r"unknown model architecture 'gpt2'.*llama"):
        load_variant(arch_dir)
    with pytest.raises(UnsupportedArchitectureError, match="falcon"):
        arch_for("falcon")
    assert "llama" in ARCHITECTURES


def test_unknown_builtin_names_the_field():
    with pytest.raises(ModelSpecError, match=r"models\.m\.source: unknown builtin 'builtin:gpt5'"):
        ModelSpec(name="m", source="builtin:gpt5")


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(manifest.ManifestError, match="not a neuronkit checkpoint"):
        load_variant(tmp_path)


def test_adapter_stack_loads_and_merges(tmp_path, tiny_base):
    from peft import LoraConfig, get_peft_model

    model, _ = load_variant(tiny_base)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["down_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    manifest.write(adapter_dir, manifest.Variant(name="sft", model="tiny", kind="adapter", parent=str(tiny_base)))
    x = torch.tensor([[1, 2, 3, 4]])
    expected = peft_model(input_ids=x).logits
    merged, _ = load_variant(adapter_dir)
    assert torch.allclose(merged(input_ids=x).logits, expected, atol=1e-5)
    base_again, _ = load_variant(tiny_base)
    assert not torch.allclose(base_again(input_ids=x).logits, expected, atol=1e-3)
