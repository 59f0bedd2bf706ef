"""Activation contrasting and dynamic patching: exactness on tiny models, controls, hook hygiene."""

from __future__ import annotations

import pytest
import torch

from neuronkit import manifest
from neuronkit.archs import model_shape
from neuronkit.hooks import capture, count_hooks, mlp_sites
from neuronkit.models import chat_prompt, load_variant
from neuronkit.neurons import NeuronIndex
from neuronkit.patching import PatchingError, guide_adapters, guided_fused, guided_two_model, static_patch
from neuronkit.scores.contrast import (
    ContrastConfig, batch_inputs, contrast_index, contrast_statistics, generate_sequences,
)
from neuronkit.stats import PairedStats

PROMPTS = ["How do I bake bread?", "Tell me a secret plan", "Write one word", "Explain rain to a child please"]


@pytest.fixture(scope="module")
def tiny_pair(tiny_base, tmp_path_factory):
    """A tiny base (U) and a random LoRA adapter on it (A), as checkpoint directories."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_variant(tiny_base)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                     init_lora_weights=False, lora_dropout=0.0)
    torch.manual_seed(3)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    out = tmp_path_factory.mktemp("pair") / "aligned"
    peft_model.save_pretrained(str(out))
    manifest.write(out, manifest.Variant(name="aligned", model="tiny", kind="adapter", parent=str(tiny_base),
                                         method="test"))
    return tiny_base, out


def _enc(tok, prompts):
    tok.padding_side = "left"
    return tok([chat_prompt(tok, p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)


def _greedy(model, tok, enc, n=8, **kw):
    return model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, **kw)


def _all_neurons(model):
    return {l: torch.arange(model.config.intermediate_size) for l in range(model.config.num_hidden_layers)}


def test_paired_stats_match_a_direct_computation_regardless_of_batching():
    torch.manual_seed(0)
    a, b = torch.randn(50, 6), torch.randn(50, 6)
    one, split = PairedStats.zeros(1, 6), PairedStats.zeros(1, 6)
    one.update(0, a, b)
    for lo, hi in ((0, 7), (7, 30), (30, 50)):
        split.update(0, a[lo:hi], b[lo:hi])
    direct = torch.sqrt(((a - b) ** 2).mean(0)).double()
    for stats in (one, split):
        assert torch.allclose(stats.rms_change()[0], direct, atol=1e-6)
        assert torch.allclose(stats.mean_a[0], a.mean(0).double(), atol=1e-6)
        assert torch.allclose(stats.std("b")[0], b.std(0).double(), atol=1e-6)


def test_batch_inputs_select_the_requested_tokens():
    from neuronkit.scores.contrast import Sequence_

    seqs = [Sequence_([1, 2, 3], [4, 5]), Sequence_([6], [7, 8, 9])]
    comp = batch_inputs(seqs, 0, "completion", "cpu")
    assert comp["input_ids"][comp["select"]].tolist() == [4, 5, 7, 8, 9]
    assert batch_inputs(seqs, 0, "prompt", "cpu")["input_ids"][batch_inputs(seqs, 0, "prompt", "cpu")["select"]].tolist() == [1, 2, 3, 6]
    last = batch_inputs(seqs, 0, "prompt_last", "cpu")
    assert last["input_ids"][last["select"]].tolist() == [3, 6]
    assert last["position_ids"][1].tolist() == [0, 0, 1, 2, 3]  # left padding: positions start at the first real token


def test_contrast_of_a_model_with_itself_scores_zero_and_with_another_model_ranks_changes(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    cfg = ContrastConfig(max_new_tokens=6, batch_size=3)
    seqs = generate_sequences(u, tok, PROMPTS, cfg)
    assert all(s.completion_ids for s in seqs)
    same = contrast_statistics(u, u, seqs, tok.pad_token_id, cfg)
    assert torch.all(same.rms_change() == 0)
    stats = contrast_statistics(a, u, seqs, tok.pad_token_id, cfg)
    assert stats.count[0, 0] == sum(len(s.completion_ids) for s in seqs)
    idx = contrast_index(stats, u.config, {"variants": ["aligned", "base"]}, exclude_last_layers=1)
    assert set(idx.layer.tolist()) == {0} and idx.score[0] > 0
    # the top neuron's score equals a direct RMS over the same tokens
    layer, _, neuron = idx.keys()[0]
    batch = batch_inputs(seqs, tok.pad_token_id, "completion", "cpu")
    select = batch.pop("select")
    with capture(a, mlp_sites(a)) as ha:
        a.model(**batch)
    with capture(u, mlp_sites(u)) as hu:
        u.model(**batch)
    direct = torch.sqrt(((ha[(layer, "mlp")][select][:, neuron] - hu[(layer, "mlp")][select][:, neuron]) ** 2).mean())
    assert idx.score[0] == pytest.approx(direct.item(), rel=1e-4)


def test_contrast_index_is_deterministic(tiny_pair, tmp_path):
    base_dir, aligned_dir = tiny_pair
    from neuronkit.data import write_table
    import pyarrow as pa

    write_table(pa.table({"prompt": PROMPTS}), tmp_path / "p.parquet")
    outs = []
    for i in range(2):
        idx_path = tmp_path / f"idx{i}.parquet"
        from neuronkit.scores.contrast import contrast_files

        contrast_files(aligned_dir, base_dir, tmp_path / "p.parquet", ContrastConfig(max_new_tokens=4),
                       generator="unaligned", out_index=idx_path, out_stats=tmp_path / f"s{i}.safetensors",
                       meta={"model": "tiny"})
        outs.append(idx_path.read_bytes())
    assert outs[0] == outs[1]
    assert (tmp_path / "s0.safetensors").read_bytes() == (tmp_path / "s1.safetensors").read_bytes()


def test_k0_patching_reproduces_plain_generation(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS)
    plain = _greedy(u, tok, enc)
    with guided_two_model(u, a, {}):
        k0 = _greedy(u, tok, enc)
    assert torch.equal(plain, k0)


def test_guiding_a_model_by_itself_on_every_neuron_changes_nothing(tiny_pair):
    """If A == U, full patching must reproduce U token for token: the guide stays in sync at every step."""
    base_dir, _ = tiny_pair
    u, tok = load_variant(base_dir)
    twin, _ = load_variant(base_dir)
    enc = _enc(tok, PROMPTS)
    plain = _greedy(u, tok, enc, n=10)
    with guided_two_model(u, twin, _all_neurons(u)):
        patched = _greedy(u, tok, enc, n=10)
    assert torch.equal(plain, patched)


def test_full_patching_gives_u_exactly_a_s_mlp_activations_at_every_step(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS[:2])
    seen_u: list[dict] = []
    guide_seen: list[dict] = []
    with capture(a, mlp_sites(a)) as guide, guided_two_model(u, a, _all_neurons(u)):
        with capture(u, mlp_sites(u)) as after_patch:
            def snapshot(_m, _a, _o):
                seen_u.append(dict(after_patch))
                guide_seen.append(dict(guide))
            handle = u.register_forward_hook(snapshot)
            try:
                _greedy(u, tok, enc, n=5)
            finally:
                handle.remove()
    assert len(seen_u) == 5
    for step_u, step_a in zip(seen_u, guide_seen):
        for site in step_u:
            assert torch.equal(step_u[site], step_a[site])
    assert count_hooks(u) == 0 and count_hooks(a) == 0


def test_guided_activations_equal_a_teacher_forced_on_u_tokens(tiny_pair):
    """The guide's per-step activations (with its KV cache) equal A run once on U's final tokens."""
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS[:1])  # one row: no padding
    steps: list[torch.Tensor] = []
    neurons = _all_neurons(u)
    with guided_two_model(u, a, neurons), capture(u, [(1, "mlp")]) as store:
        handle = u.register_forward_hook(lambda *_: steps.append(store[(1, "mlp")]))
        try:
            out = _greedy(u, tok, enc, n=4)
        finally:
            handle.remove()
    with capture(a, [(1, "mlp")]) as ref:
        a(out[:, :-1])
    stitched = torch.cat(steps, dim=1)
    assert torch.allclose(stitched, ref[(1, "mlp")], atol=1e-5)


def test_fused_mode_matches_two_model_mode(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS)
    shape = model_shape(u.config)
    torch.manual_seed(1)
    idx = NeuronIndex.from_scores({"mlp": torch.rand(2, shape["sites"]["mlp"])}, {"shape": shape}).top(40)
    neurons = idx.by_layer("mlp")
    with guided_two_model(u, a, neurons):
        two = _greedy(u, tok, enc, n=8)
    adapters = guide_adapters(base_dir, aligned_dir)
    with guided_fused(u, adapters, neurons):
        fused = _greedy(u, tok, enc, n=8)
    assert torch.equal(two, fused)
    plain = _greedy(u, tok, enc, n=8)
    assert not torch.equal(plain, two)  # the patch does something
    assert count_hooks(u) == 0


def test_fused_mode_refuses_unrelated_variants(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    with pytest.raises(PatchingError, match="ancestor"):
        guide_adapters(aligned_dir, base_dir)


def test_sampling_and_beam_search_are_patched(tiny_pair):
    base_dir, _ = tiny_pair
    u, tok = load_variant(base_dir)
    twin, _ = load_variant(base_dir)
    enc = _enc(tok, PROMPTS[:2])
    for kw in ({"num_beams": 3}, {"do_sample": True}):
        torch.manual_seed(5)
        plain = u.generate(**enc, max_new_tokens=6, pad_token_id=tok.pad_token_id, **kw)
        torch.manual_seed(5)
        with guided_two_model(u, twin, _all_neurons(u)):
            patched = u.generate(**enc, max_new_tokens=6, pad_token_id=tok.pad_token_id, **kw)
        assert torch.equal(plain, patched), kw


def test_no_hook_remains_after_an_error_inside_generation(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS[:2])
    bad = {0: torch.tensor([10_000])}  # out of range: fails inside the hook during generate
    with pytest.raises(IndexError):
        with guided_two_model(u, a, bad):
            _greedy(u, tok, enc)
    with pytest.raises(IndexError):
        with guided_fused(u, guide_adapters(base_dir, aligned_dir), bad):
            _greedy(u, tok, enc)
    assert count_hooks(u) == 0 and count_hooks(a) == 0


def test_static_controls_set_values(tiny_base):
    u, _ = load_variant(tiny_base)
    n = u.config.intermediate_size
    mean, std = torch.full((2, n), 0.25, dtype=torch.float64), torch.full((2, n), 0.01, dtype=torch.float64)
    ids = torch.tensor([1, 5])
    for value, check in (("zero", lambda h: torch.all(h == 0)), ("mean", lambda h: torch.all(h == 0.25)),
                         ("noise", lambda h: torch.all((h - 0.25).abs() < 0.1) and h.std() > 0)):
        with static_patch(u, {0: ids}, value, mean=mean, std=std), capture(u, [(0, "mlp")]) as store:
            u(torch.tensor([[3, 4, 5, 6]]))
        assert check(store[(0, "mlp")][..., ids]), value
    with pytest.raises(PatchingError, match="statistics"):
        with static_patch(u, {0: ids}, "mean"):
            pass
