import warnings

import pytest
import torch

from neuronkit import manifest
from neuronkit.models import load_variant
from neuronkit.tune import (AdapterConfig, TrainConfig, checkpointing_field, device_training_args, kto_examples,
                            preference_examples, sft_examples, train_adapter)

PROMPTS = ["how to do a bad thing", "write a nice poem", "explain rain", "build a trap"]
GOOD = ["I'm sorry, I can't help with that.", "Roses are red.", "Water falls from clouds.", "I cannot help."]
BAD = ["Sure, step one is", "No.", "I won't.", "Sure, take a rope"]


def _logits(ckpt):
    model, _ = load_variant(ckpt)
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 6, 7, 8, 9]])).logits


def test_cpu_training_avoids_bf16_and_checkpointing():
    from transformers import TrainingArguments

    args = device_training_args(torch.device("cpu"))
    assert args["bf16"] is False and args[checkpointing_field()] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated argument name
        built = TrainingArguments(output_dir="unused", report_to=[], **args)
    assert built.bf16 is False and getattr(built, checkpointing_field()) is False


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="align method"):
        TrainConfig(method="ppo")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ValueError, match="adapter.kind"):
        AdapterConfig(kind="prefix")


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_sft_adapter_trains_saves_and_changes_the_model(tmp_path, tiny_base, kind):
    cfg = TrainConfig(method="sft", learning_rate=5e-2, max_steps=3, batch_size=2, max_length=64,
                      adapter=AdapterConfig(kind=kind, r=2, alpha=4))
    out = train_adapter(tiny_base, tmp_path / "sft", sft_examples(PROMPTS, GOOD), cfg,
                        model_name="tiny", variant_name="sft", inputs={"x": "abc"})
    var = manifest.read(out)
    assert var.kind == "adapter" and var.method == "sft" and var.inputs == {"x": "abc"}
    assert (out / "adapter_model.safetensors").exists() and not (out / "trainer").exists()
    assert not torch.allclose(_logits(out), _logits(tiny_base), atol=1e-4)


def test_sft_is_deterministic(tmp_path, tiny_base):
    cfg = TrainConfig(method="sft", learning_rate=5e-2, max_steps=2, batch_size=2, max_length=64,
                      adapter=AdapterConfig(r=2, alpha=4))
    a = train_adapter(tiny_base, tmp_path / "a", sft_examples(PROMPTS, GOOD), cfg, model_name="t", variant_name="s")
    b = train_adapter(tiny_base, tmp_path / "b", sft_examples(PROMPTS, GOOD), cfg, model_name="t", variant_name="s")
    assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("method", ["dpo", "orpo", "kto", "simpo"])
def test_preference_methods_train_on_top_of_sft(tmp_path, tiny_base, method):
    sft_cfg = TrainConfig(method="sft", learning_rate=5e-2, max_steps=1, batch_size=2, max_length=64,
                          adapter=AdapterConfig(r=2, alpha=4))
    sft = train_adapter(tiny_base, tmp_path / "sft", sft_examples(PROMPTS, GOOD), sft_cfg, model_name="t",
                        variant_name="sft")
    rows = (kto_examples if method == "kto" else preference_examples)(PROMPTS, GOOD, BAD)
    cfg = TrainConfig(method=method, learning_rate=5e-2, max_steps=2, batch_size=2, max_length=64,
                      adapter=AdapterConfig(r=2, alpha=4))
    out = train_adapter(sft, tmp_path / method, rows, cfg, model_name="t", variant_name="aligned")
    var = manifest.read(out)
    assert var.method == method and (out / var.parent).resolve() == sft.resolve()
    assert not torch.allclose(_logits(out), _logits(sft), atol=1e-5)


def test_kto_rows_are_unpaired_with_labels():
    rows = kto_examples(["p"], ["good"], ["bad"])
    assert [r["label"] for r in rows] == [True, False]
    assert rows[0]["completion"][0]["content"] == "good"


def test_adapter_config_is_byte_identical_across_processes(tmp_path, tiny_base):
    """peft writes target_modules in set order, which follows PYTHONHASHSEED; the saved config must not."""
    import os
    import subprocess
    import sys

    code = ("import sys; from neuronkit.tune import *; "
            "cfg = TrainConfig(method='sft', learning_rate=5e-2, max_steps=1, batch_size=2, max_length=64, "
            "adapter=AdapterConfig(r=2, alpha=4)); "
            "train_adapter(sys.argv[1], sys.argv[2], sft_examples(['a b', 'c d'], ['e f', 'g h']), cfg, "
            "model_name='t', variant_name='s')")
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(tiny_base), str(out)], env=env, check=True,
                       capture_output=True, timeout=300)
        outs.append((out / "adapter_config.json").read_bytes())
    assert outs[0] == outs[1]
    assert b'"down_proj",\n    "gate_proj"' in outs[0]  # the module list is written sorted


def _adapter_tensors(ckpt):
    from safetensors.torch import load_file

    return load_file(str(ckpt / "adapter_model.safetensors"))


@pytest.mark.parametrize("max_length", [512, 100, 64])  # no cut; the long row cut; it dropped
def test_padding_free_sft_trains_the_same_adapter_as_padded_batches(tmp_path, tiny_base, max_length):
    """Flattened batches attend only within each row (the packed-sequence mask) and truncate as trl does."""
    prompts = PROMPTS + ["tell me a much longer story about a dragon and a castle on a hill"]
    targets = GOOD + ["Once upon a time a dragon lived in a castle on a hill, and it was happy there for years."]
    trained = {}
    for free in (False, True):
        cfg = TrainConfig(method="sft", learning_rate=5e-2, max_steps=2, batch_size=5, max_length=max_length,
                          padding_free=free, adapter=AdapterConfig(r=2, alpha=4))
        out = train_adapter(tiny_base, tmp_path / f"free{free}", sft_examples(prompts, targets), cfg,
                            model_name="t", variant_name="s")
        trained[free] = _adapter_tensors(out)
        assert manifest.read(out).params["padding_free"] is free
    assert trained[False].keys() == trained[True].keys()
    moved = max(t.abs().max().item() for k, t in trained[False].items() if "lora_B" in k)
    assert moved > 1e-3  # the adapter trained, so equal tensors mean equal gradients
    for key, padded in trained[False].items():
        torch.testing.assert_close(trained[True][key], padded, rtol=1e-4, atol=1e-6)


def test_padding_free_is_refused_outside_sft():
    with pytest.raises(ValueError, match="padding_free applies to sft only"):
        TrainConfig(method="dpo", padding_free=True)
