"""EXPO, module similarity, adaptive/threshold/layer selection and masked transplant on LoRA adapters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from neuronkit import lora, manifest, realign as RA
from neuronkit.models import load_variant

CPU = torch.device("cpu")
TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


def _make_adapter(parent: Path, out: Path, *, seed: int, method: str, **lora) -> Path:
    """A seeded random LoRA adapter (both factors non-zero) over the merged parent checkpoint."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_variant(parent, device=CPU)
    pm = get_peft_model(model, LoraConfig(target_modules=TARGETS, **{"r": 4, "lora_alpha": 8, **lora}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    pm.save_pretrained(str(out))
    manifest.write(out, manifest.Variant(name=out.name, model="tiny", kind="adapter",
                                         parent=os.path.relpath(parent, out), method=method))
    return out


@pytest.fixture(scope="module")
def chain(tiny_base, tmp_path_factory):
    """base -> sft adapter -> aligned adapter (rsLoRA, so the scaling is not alpha/r)."""
    root = tmp_path_factory.mktemp("chain")
    sft = _make_adapter(tiny_base, root / "sft", seed=1, method="sft")
    aligned = _make_adapter(sft, root / "aligned", seed=2, method="dpo", use_rslora=True)
    return root, sft, aligned


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    model, _ = load_variant(ckpt, device=CPU)
    return {k: v.double() for k, v in model.state_dict().items()}


def _attacked(aligned: Path, out: Path, seed: int = 5) -> Path:
    """Continue the aligned adapter: same tensors plus seeded noise, same parent."""
    tensors, _ = lora.read_adapter(aligned)
    gen = torch.Generator().manual_seed(seed)
    noisy = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in tensors.items()}
    lora.write_adapter(out, noisy, aligned)
    var = manifest.read(aligned)
    manifest.write(out, manifest.Variant(name="attacked", model="tiny", kind="adapter",
                                         parent=RA._relative_parent(aligned, var.parent, out), method="attack"))
    return out


def _synthetic(n_modules: int, seed: int = 0, r: int = 2, d: int = 6):
    """Attacked, reference and masks for n fake modules spread over layers."""
    gen = torch.Generator().manual_seed(seed)
    ft, ref, masks = {}, {}, {}
    for i in range(n_modules):
        module = f"base_model.model.model.layers.{i // 2}.mlp.{'up' if i % 2 else 'down'}_proj"
        for key, shape in zip(lora.factor_keys(module), ((r, d), (d, r))):
            ft[key] = torch.randn(shape, generator=gen)
            ref[key] = torch.randn(shape, generator=gen)
            masks[key] = torch.rand(shape, generator=gen) < 0.3
    return ft, ref, masks


# ----------------------------------------------------------------------------- EXPO


def test_expo_exact_matches_extrapolation_of_merged_weights(chain):
    root, sft, aligned = chain
    ref = RA.expo(aligned, root / "reference", alpha=0.9)
    var = manifest.read(ref)
    assert var.method == "expo" and var.params["mode"] == "exact" and var.params["alpha"] == 0.9
    assert (ref / var.parent).resolve() == sft.resolve()
    w_sft, w_al, w_ref = _weights(sft), _weights(aligned), _weights(ref)
    changed = 0
    for k in w_ref:
        torch.testing.assert_close(w_ref[k], w_al[k] + 0.9 * (w_al[k] - w_sft[k]), rtol=1e-5, atol=1e-6)
        changed += not torch.equal(w_al[k], w_sft[k])
    assert changed == 2 * len(TARGETS)  # every adapted module of both layers moved


def test_expo_legacy_scales_delta_by_two_alpha_squared(chain):
    root, sft, aligned = chain
    ref = RA.expo(aligned, root / "reference_legacy", alpha=0.9, mode="legacy_both_factors")
    assert manifest.read(ref).params["delta_factor"] == pytest.approx(3.24)
    w_sft, w_al, w_ref = _weights(sft), _weights(aligned), _weights(ref)
    for k in w_ref:
        torch.testing.assert_close(w_ref[k] - w_sft[k], 3.24 * (w_al[k] - w_sft[k]), rtol=1e-4, atol=1e-6)


def test_expo_rejects_bad_options_before_writing(chain, tmp_path):
    _, _, aligned = chain
    with pytest.raises(ValueError, match="mode"):
        RA.expo(aligned, tmp_path / "x", mode="both")
    with pytest.raises(ValueError, match="alpha"):
        RA.expo(aligned, tmp_path / "x", alpha=-1.0)
    assert not (tmp_path / "x").exists()


def test_lora_scale_matches_peft(tiny_base):
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    for kwargs in ({"use_rslora": True}, {"rank_pattern": {"down_proj": 2}, "alpha_pattern": {"v_proj": 3}}):
        model, _ = load_variant(tiny_base, device=CPU)
        pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **kwargs))
        config = pm.peft_config["default"].to_dict()
        for name, mod in pm.named_modules():
            if isinstance(mod, LoraLayer):
                r = mod.lora_A["default"].weight.shape[0]
                assert lora.lora_scale(config, name, r) == pytest.approx(mod.scaling["default"])


# ----------------------------------------------------------------------------- similarity + selection


def test_delta_similarity_is_cosine_of_masked_products():
    ft, ref, masks = _synthetic(3)
    sims = RA.module_similarity(ft, ref, masks, kind="delta")
    for module, s in sims.items():
        a, b = lora.factor_keys(module)
        x = (ft[b] * masks[b]) @ (ft[a] * masks[a])
        y = (ref[b] * masks[b]) @ (ref[a] * masks[a])
        assert s == pytest.approx(float(torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0)),
                                  abs=1e-6)
    same = RA.module_similarity(ft, ft, masks, kind="factors")
    assert all(v == pytest.approx(1.0) for v in same.values())


def test_probabilities_are_linear_in_rank_and_ordering_flips():
    sims = {"m0": 0.9, "m1": 0.1, "m2": 0.5}
    low = RA.patch_probabilities(sims, 0.5, 0.2, "low_similarity_first")
    assert low == pytest.approx({"m1": 0.7, "m2": 0.5, "m0": 0.3})
    high = RA.patch_probabilities(sims, 0.5, 0.2, "high_similarity_first")
    assert high == pytest.approx({"m1": 0.3, "m2": 0.5, "m0": 0.7})
    assert RA.patch_probabilities({"only": 0.3}, 0.5, 0.2) == {"only": 0.5}


def test_seed_fixes_the_selection():
    ft, ref, masks = _synthetic(64)
    sims = RA.module_similarity(ft, ref, masks)
    pick = lambda seed: RA.select_modules(sims, RA.RealignConfig(seed=seed))[0]  # noqa: E731
    assert pick(0) == pick(0)
    assert pick(0) != pick(1)
    assert 10 < len(pick(0)) < 54


def test_low_similarity_modules_are_patched_more_often():
    ft, ref, masks = _synthetic(40)
    sims = RA.module_similarity(ft, ref, masks)
    ranked = sorted(sims, key=sims.get)
    low, high = set(ranked[:10]), set(ranked[-10:])
    counts = {"low": 0, "high": 0}
    for seed in range(200):
        chosen = set(RA.select_modules(sims, RA.RealignConfig(seed=seed))[0])
        counts["low"] += len(chosen & low)
        counts["high"] += len(chosen & high)
    assert counts["low"] > counts["high"]


def test_threshold_and_layer_modes():
    ft, ref, masks = _synthetic(8)
    sims = RA.module_similarity(ft, ref, masks)
    chosen, _ = RA.select_modules(sims, RA.RealignConfig(mode="threshold", tau=0.0))
    assert chosen == [m for m, s in sims.items() if s < 0.0]
    chosen, probs = RA.select_modules(sims, RA.RealignConfig(mode="layer", layers=(1, 3)))
    assert chosen == [m for m in sims if lora.layer_of(m) in (1, 3)] and len(chosen) == 4
    out, _ = RA.realign_tensors(ft, ref, None, RA.RealignConfig(mode="layer", layers=(1, 3)))
    for key in ft:
        expected = ref[key] if lora.layer_of(key) in (1, 3) else ft[key]
        assert torch.equal(out[key], expected)


# ----------------------------------------------------------------------------- transplant


def test_transplant_touches_only_masked_entries_of_selected_modules():
    ft, ref, masks = _synthetic(6)
    selected = list(lora.lora_modules(ft))[1::2]
    out = RA.transplant(ft, ref, masks, selected)
    for key in ft:
        chosen = any(key.startswith(m + ".") for m in selected)
        m = masks[key] if chosen else torch.zeros_like(masks[key])
        assert torch.equal(out[key][~m], ft[key][~m])  # bit-identical elsewhere
        assert torch.equal(out[key][m], ref[key][m])
        assert torch.equal(out[key], ft[key] * (~m) + ref[key] * m)


def _realign_inputs(aligned: Path, tmp_path: Path):
    """(reference, attacked, reference tensors, a seeded 20% mask file) next to each other in ``tmp_path``."""
    from neuronkit.scores.adapter_scores import save_masks

    ref = RA.expo(aligned, tmp_path / "reference")
    attacked = _attacked(aligned, tmp_path / "attacked_p0.1")
    tensors, _ = lora.read_adapter(ref)
    gen = torch.Generator().manual_seed(0)
    masks_path = save_masks({k: torch.rand(v.shape, generator=gen) < 0.2 for k, v in tensors.items()},
                            tmp_path / "lowrank.safetensors", {"method": "lowrank"})
    return ref, attacked, tensors, masks_path


def test_realign_writes_adapter_manifest_and_summary(chain, tmp_path):
    from neuronkit.scores.adapter_scores import load_masks

    root, sft, aligned = chain
    ref, attacked, tensors, masks_path = _realign_inputs(aligned, tmp_path)
    cfg = RA.RealignConfig(seed=3)
    out = tmp_path / "nlsr_p0.1"
    summary = RA.realign(attacked, ref, out, cfg, masks_path=masks_path)
    var = manifest.read(out)
    assert var.method == "nlsr" and (out / var.parent).resolve() == sft.resolve()
    assert set(var.inputs) == {"attacked", "reference", "masks"}
    on_disk = json.loads((out / RA.SUMMARY).read_text())
    assert on_disk["n_selected"] == summary["n_selected"] == sum(m["selected"] for m in summary["modules"])
    assert summary["n_modules"] == 2 * len(TARGETS)
    new, _ = lora.read_adapter(out)
    old, _ = lora.read_adapter(attacked)
    masks = load_masks(masks_path)
    expected = RA.transplant(old, tensors, masks, [m["module"] for m in summary["modules"] if m["selected"]])
    assert all(torch.equal(new[k], expected[k]) for k in old)
    # it loads as a normal adapter variant: the SFT model plus the realigned delta, module by module
    sft_weights, merged = _weights(sft), _weights(out)
    _, config = lora.read_adapter(out)
    for module in lora.lora_modules(new):
        a, b = (new[k].double() for k in lora.factor_keys(module))
        key = module.removeprefix("base_model.model.") + ".weight"
        expected_w = sft_weights[key] + lora.lora_scale(config, module, a.shape[0]) * (b @ a)
        torch.testing.assert_close(merged[key], expected_w, rtol=1e-5, atol=1e-5)


def test_realign_errors():
    with pytest.raises(ValueError, match="epsilon"):
        RA.RealignConfig(rate=0.9, epsilon=0.2)
    with pytest.raises(ValueError, match="ordering"):
        RA.RealignConfig(ordering="random")
    with pytest.raises(ValueError, match="layers"):
        RA.RealignConfig(mode="layer")
    with pytest.raises(ValueError, match="layers"):
        RA.RealignConfig(layers=(1,))
    with pytest.raises(ValueError, match="tau"):
        RA.RealignConfig(mode="threshold", tau=2.0)
    ft, ref, masks = _synthetic(2)
    with pytest.raises(ValueError, match="needs safety-critical masks"):
        RA.realign_tensors(ft, ref, None, RA.RealignConfig())
    masks.pop(next(iter(masks)))
    with pytest.raises(ValueError, match="no entry"):
        RA.realign_tensors(ft, ref, masks, RA.RealignConfig())
    ref.pop(next(iter(ref)))
    with pytest.raises(ValueError, match="different tensors"):
        RA.realign_tensors(ft, ref, masks, RA.RealignConfig())


# ----------------------------------------------------------------------------- random-mask control


def test_random_masks_keep_each_tensors_count_and_are_seeded():
    _, _, masks = _synthetic(6)
    a, b, c = RA.random_masks_like(masks, 0), RA.random_masks_like(masks, 0), RA.random_masks_like(masks, 1)
    assert all(torch.equal(a[k], b[k]) for k in masks)
    assert any(not torch.equal(a[k], c[k]) for k in masks)
    assert all(a[k].shape == masks[k].shape and int(a[k].sum()) == int(masks[k].sum()) for k in masks)
    assert any(not torch.equal(a[k], masks[k]) for k in masks)


def test_the_control_transplants_random_entries_into_the_same_modules():
    ft, ref, masks = _synthetic(6)
    modules = list(lora.lora_modules(ft))[::2]
    out, summary = RA.random_control_tensors(ft, ref, masks, modules, seed=4)
    random = RA.random_masks_like(masks, 4)
    assert all(torch.equal(out[k], RA.transplant(ft, ref, random, modules)[k]) for k in ft)
    untouched = [k for k in ft if not any(k.startswith(m + ".") for m in modules)]
    assert untouched and all(torch.equal(out[k], ft[k]) for k in untouched)
    assert summary["n_selected"] == len(modules) and summary["entries_marked"] == sum(int(m.sum()) for m in masks.values())
    with pytest.raises(ValueError, match="modules the adapters do not have"):
        RA.random_control_tensors(ft, ref, masks, ["base_model.model.model.layers.9.mlp.up_proj"], seed=4)


def test_realign_random_control_writes_a_loadable_adapter_next_to_nlsr(chain, tmp_path):
    from neuronkit.scores.adapter_scores import load_masks

    _, sft, aligned = chain
    ref, attacked, tensors, masks_path = _realign_inputs(aligned, tmp_path)
    nlsr = tmp_path / "nlsr_p0.1"
    RA.realign(attacked, ref, nlsr, RA.RealignConfig(seed=3), masks_path=masks_path)
    out = tmp_path / "nlsr_random_p0.1"
    summary = RA.realign_random_control(attacked, ref, nlsr, out, masks_path=masks_path, seed=3,
                                        name="nlsr_random_p0.1")
    var = manifest.read(out)
    assert var.method == "nlsr_random_masks" and (out / var.parent).resolve() == sft.resolve()
    assert set(var.inputs) == {"attacked", "reference", "masks", "nlsr"}
    assert summary["modules_selected"] == RA.selected_modules(nlsr)
    new, _ = lora.read_adapter(out)
    old, _ = lora.read_adapter(attacked)
    random = RA.random_masks_like(load_masks(masks_path), 3)
    expected = RA.transplant(old, tensors, random, RA.selected_modules(nlsr))
    assert all(torch.equal(new[k], expected[k]) for k in old)
    load_variant(out, device=CPU)  # a normal adapter variant
