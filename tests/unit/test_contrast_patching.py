"""Activation contrasting and dynamic patching: exactness on tiny models, controls, hook hygiene."""

from __future__ import annotations

import pytest
import torch
from transformers import Cache

from neuronkit import manifest
from neuronkit.archs import model_shape
from neuronkit.hooks import capture, count_hooks, mlp_sites
from neuronkit.models import chat_prompt, load_variant, quiet_checkpointing_probe
from neuronkit.neurons import NeuronIndex
from neuronkit.patching import (
    PatchingError, cache_parameter, compare_runs, first_divergence, guide_adapters, guided_fused, guided_two_model,
    static_patch,
)
from neuronkit.scores.contrast import (
    ContrastConfig, batch_inputs, contrast_index, contrast_statistics, generate_sequences,
)
from neuronkit.stats import PairedStats

PROMPTS = ["How do I bake bread?", "Tell me a secret plan", "Write one word", "Explain rain to a child please"]

# Contrast and guided patching must not lean on anything transformers has deprecated: a deprecated
# keyword is exactly how the guide's cache went missing in transformers 5.24.
pytestmark = pytest.mark.filterwarnings("error::FutureWarning", "error::DeprecationWarning")

DECODING = {
    "greedy": {"do_sample": False},
    "sampling": {"do_sample": True, "top_k": 4, "temperature": 0.7},
    "beam": {"do_sample": False, "num_beams": 3},
}


def _random_adapter(parent, out, cfg, seed, fill):
    """An adapter checkpoint on ``parent``: ``cfg``'s parameters, each drawn by ``fill(name, parameter)``."""
    from peft import get_peft_model

    model, _ = load_variant(parent)
    torch.manual_seed(seed)
    with quiet_checkpointing_probe():
        peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            fill(name, p)
    peft_model.save_pretrained(str(out))
    manifest.write(out, manifest.Variant(name=out.name, model="tiny", kind="adapter", parent=str(parent),
                                         method="test"))
    return out


def _lora_checkpoint(parent, out, targets, seed, **lora_kwargs):
    """A LoRA adapter checkpoint on ``parent`` with random, non-zero factors on ``targets``."""
    from peft import LoraConfig

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, lora_dropout=0.0,
                     **lora_kwargs)
    return _random_adapter(parent, out, cfg, seed, lambda name, p: p.normal_(0, 0.3) if "lora_B" in name else None)


def _ia3_checkpoint(parent, out, seed, targets=("down_proj",)):
    """An IA3 checkpoint on ``parent`` with random scales; down_proj's is on its input (the MLP neurons), as
    published, any other target's on its output."""
    from peft import IA3Config

    cfg = IA3Config(target_modules=list(targets), feedforward_modules=["down_proj"], init_ia3_weights=False)
    return _random_adapter(parent, out, cfg, seed, lambda name, p: p.uniform_(0.0, 2.0) if "ia3_l" in name else None)


@pytest.fixture(scope="module")
def deep_base(tmp_path_factory):
    """A four-layer tiny base: patching a middle layer exercises the guide's early stop."""
    from neuronkit.models import materialize
    from neuronkit.modelspec import ModelSpec, TinySpec

    out = tmp_path_factory.mktemp("deep") / "base"
    return materialize(ModelSpec(name="tiny", source="builtin:tiny", tiny=TinySpec(layers=4)), out)


@pytest.fixture(scope="module")
def mlp_only_pair(deep_base, tmp_path_factory):
    """U = the deep base; A = U plus LoRA on gate/up only, so A differs from U only at the patch site."""
    out = tmp_path_factory.mktemp("mlp_only") / "aligned"
    return deep_base, _lora_checkpoint(deep_base, out, ["gate_proj", "up_proj"], seed=11)


@pytest.fixture(scope="module")
def ia3_pair(deep_base, tmp_path_factory):
    """The published protocol: U = SFT, A = SFT + DPO, both IA3 on down_proj (here random scales on the base)."""
    root = tmp_path_factory.mktemp("ia3")
    sft = _ia3_checkpoint(deep_base, root / "sft", seed=21)
    return sft, _ia3_checkpoint(sft, root / "aligned", seed=22)


def _decode(model, tok, enc, mode, n=8):
    torch.manual_seed(5)
    return model.generate(**enc, max_new_tokens=n, pad_token_id=tok.pad_token_id, **DECODING[mode])


@pytest.fixture(scope="module")
def tiny_pair(tiny_base, tmp_path_factory):
    """A tiny base (U) and a random LoRA adapter on it (A), as checkpoint directories."""
    out = tmp_path_factory.mktemp("pair") / "aligned"
    return tiny_base, _lora_checkpoint(tiny_base, out, ["q_proj", "v_proj", "up_proj", "down_proj"], seed=3)


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


def test_greedy_steps_are_generate_s_tokens_cut_at_the_end_token_with_the_scores_that_chose_them(tiny_pair):
    from neuronkit.generate import greedy_steps

    u, tok = load_variant(tiny_pair[0])
    ids, scores = greedy_steps(u, tok, PROMPTS, max_new_tokens=6)
    want = _greedy(u, tok, _enc(tok, PROMPTS), n=6)[:, _enc(tok, PROMPTS)["input_ids"].shape[1]:]
    eos = u.generation_config.eos_token_id
    for row, got in enumerate(ids):
        assert got == want[row, :len(got)].tolist() and (len(got) == 6 or got[-1] == eos)
        assert [int(scores[t, row].argmax()) for t in range(len(got))] == got  # each token is its step's argmax
    assert scores.shape[:2] == (want.shape[1], len(PROMPTS))


def test_first_divergence_tells_a_floating_point_tie_from_a_real_difference():
    scores = torch.zeros(3, 5)
    scores[0, 1] = 4.0
    near, far = scores.clone(), scores.clone()
    near[1, 2], near[1, 3] = 2.0, 2.0 - 1e-6   # run a picks 2, the other's 3 is a hair behind: a tie
    far[1, 2], far[1, 3] = 2.0, 0.5
    other = scores.clone()
    other[1, 3], other[1, 2] = 2.0, 2.0 - 1e-6
    assert first_divergence([1, 2], near, [1, 2], near) is None
    tie = first_divergence([1, 2, 0], near, [1, 3, 0], other)
    assert tie["step"] == 1 and tie["tie"] and 0 <= tie["margin_a"] < 1e-3
    real = first_divergence([1, 2, 0], far, [1, 3, 0], other)
    assert real["step"] == 1 and not real["tie"] and real["margin_a"] == pytest.approx(1.5)
    assert first_divergence([1, 2], near, [1, 2, 4], near)["tie"] is False  # one answer stopped: a difference
    summary = compare_runs([[1, 2], [1, 2, 0], [1, 2, 0]], torch.stack([near, near, far], 1),
                           [[1, 2], [1, 3, 0], [1, 3, 0]], torch.stack([near, other, other], 1))
    assert (summary["identical"], summary["ties"], summary["differences"]) == (1, 1, 1)
    assert [d["row"] for d in summary["divergences"]] == [1, 2]


def test_fused_mode_refuses_unrelated_variants(tiny_pair):
    base_dir, aligned_dir = tiny_pair
    with pytest.raises(PatchingError, match="ancestor"):
        guide_adapters(aligned_dir, base_dir)


@pytest.mark.parametrize("mode", sorted(DECODING))
@pytest.mark.parametrize("layers", [(0, 1, 2, 3), (1, 2)], ids=["all_layers", "middle_layers"])
def test_an_identical_twin_guide_reproduces_u_under_every_decoding_mode(deep_base, mode, layers):
    """Guided by a copy of itself, U's tokens do not change: the guide's cache is in step at every step."""
    u, tok = load_variant(deep_base)
    twin, _ = load_variant(deep_base)
    enc = _enc(tok, PROMPTS)
    assert enc["input_ids"].shape[1] > 1
    plain = _decode(u, tok, enc, mode)
    neurons = {l: ids for l, ids in _all_neurons(u).items() if l in layers}
    with guided_two_model(u, twin, neurons):
        patched = _decode(u, tok, enc, mode)
    assert torch.equal(plain, patched)
    assert count_hooks(u) == 0 and count_hooks(twin) == 0


@pytest.mark.parametrize("mode,patch_mode", [(m, p) for m in sorted(DECODING) for p in ("two_model", "fused")
                                             if (m, p) != ("beam", "fused")])  # fused refuses beams (below)
@pytest.mark.parametrize("pair", ["mlp_only_pair", "ia3_pair"])
def test_patching_every_neuron_from_an_a_that_differs_only_there_reproduces_a(pair, patch_mode, mode, request):
    """A = U + LoRA on gate/up, or the published U = SFT and A = SFT + DPO, both IA3 on down_proj: with every MLP
    neuron patched, U computes exactly what A computes."""
    base_dir, aligned_dir = request.getfixturevalue(pair)
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS)
    want, plain = _decode(a, tok, enc, mode), _decode(u, tok, enc, mode)
    assert not torch.equal(want, plain)  # A really answers differently, so the test can fail
    if patch_mode == "two_model":
        context = guided_two_model(u, a, _all_neurons(u))
    else:
        context = guided_fused(u, guide_adapters(base_dir, aligned_dir), _all_neurons(u))
    with context:
        got = _decode(u, tok, enc, mode)
    assert torch.equal(got, want)


def test_an_ia3_neuron_scale_is_loaded_at_the_patch_site_and_computes_what_peft_computes(ia3_pair):
    """The scale goes onto up_proj's rows (W_down is the parent's), so down_proj's input is the scaled h * s."""
    from peft import PeftModel

    sft_dir, aligned_dir = ia3_pair
    u, tok = load_variant(sft_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS)
    with quiet_checkpointing_probe():
        live = PeftModel.from_pretrained(load_variant(sft_dir)[0], str(aligned_dir)).eval()
    scales = {int(n.split(".layers.")[1].split(".")[0]): p.detach().reshape(-1)
              for n, p in live.named_parameters() if "ia3_l" in n}
    with torch.no_grad():
        assert torch.allclose(a(**enc).logits, live(**enc).logits, atol=1e-5)
    for layer, scale in scales.items():
        assert torch.equal(a.model.layers[layer].mlp.down_proj.weight, u.model.layers[layer].mlp.down_proj.weight)
    with capture(a, mlp_sites(a)) as site_a, capture(u, mlp_sites(u)) as site_u, torch.no_grad():
        a(**enc)
        u(**enc)
    assert torch.allclose(site_a[(0, "mlp")], site_u[(0, "mlp")] * scales[0], atol=1e-6)  # same input at layer 0
    assert all(not torch.allclose(site_a[(l, "mlp")], site_u[(l, "mlp")], atol=1e-4) for l in scales)


def test_fused_mode_applies_ia3_scales_of_any_module_as_peft_does(deep_base, tmp_path):
    """IA3 on attention and up (output scales) and down (input scale): fused tokens equal two-model tokens."""
    from neuronkit.patching import guide_adapter

    out = _ia3_checkpoint(deep_base, tmp_path / "aligned", seed=8, targets=("k_proj", "v_proj", "up_proj", "down_proj"))
    kind, modules = guide_adapter(out)
    assert kind == "IA3" and {on_input for _, on_input in modules.values()} == {True, False}
    u, tok = load_variant(deep_base)
    a, _ = load_variant(out)
    enc = _enc(tok, PROMPTS)
    torch.manual_seed(2)
    neurons = {l: torch.randperm(u.config.intermediate_size)[:32] for l in range(u.config.num_hidden_layers)}
    with guided_two_model(u, a, neurons):
        two = _greedy(u, tok, enc, n=8)
    with guided_fused(u, guide_adapters(deep_base, out), neurons):
        fused = _greedy(u, tok, enc, n=8)
    assert torch.equal(two, fused) and not torch.equal(two, _greedy(u, tok, enc, n=8))


def test_fused_mode_refuses_beam_search_passed_to_generate(mlp_only_pair):
    base_dir, aligned_dir = mlp_only_pair
    u, tok = load_variant(base_dir)
    enc = _enc(tok, PROMPTS[:2])
    with pytest.raises(PatchingError, match="beam search"):
        with guided_fused(u, guide_adapters(base_dir, aligned_dir), _all_neurons(u)):
            _decode(u, tok, enc, "beam")
    assert count_hooks(u) == 0


def test_a_guide_that_loses_u_s_cache_fails_loudly_instead_of_resetting(tiny_pair, monkeypatch):
    """If U's cache ever goes unseen (a renamed argument, a new cache class), patching must stop."""
    import neuronkit.patching as patching

    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    monkeypatch.setattr(patching, "_input_cache", lambda args, kwargs: None)
    with pytest.raises(PatchingError, match="lost track"):
        with guided_two_model(u, a, _all_neurons(u)):
            _greedy(u, tok, _enc(tok, PROMPTS[:2]), n=4)
    assert count_hooks(u) == 0 and count_hooks(a) == 0


def test_guided_patching_outside_generate_keeps_the_guide_in_step(tiny_pair):
    """A hand-written decoding loop (prefill, then one token at a time with U's cache) is patched exactly."""
    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    enc = _enc(tok, PROMPTS[:1])
    with guided_two_model(u, a, _all_neurons(u)):
        want = _greedy(u, tok, enc, n=4)
        ids = enc["input_ids"]
        out = u(input_ids=ids, use_cache=True)
        for _ in range(4):
            nxt = out.logits[:, -1:].argmax(-1)
            ids = torch.cat([ids, nxt], dim=1)
            cache = next(v for v in out.values() if isinstance(v, Cache))
            out = u(input_ids=nxt, **{cache_parameter(u): cache}, use_cache=True)
    assert torch.equal(ids, want)


def test_a_decoder_without_a_cache_parameter_is_refused():
    with pytest.raises(PatchingError, match="no KV cache"):
        cache_parameter(torch.nn.Linear(2, 2))


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


def test_patching_perplexity_is_measured_at_every_k(tiny_pair, tmp_path):
    import pyarrow as pa

    from neuronkit.data import write_table
    from neuronkit.perplexity import perplexity
    from neuronkit.patching import perplexity_file, select_neurons

    base_dir, aligned_dir = tiny_pair
    u, tok = load_variant(base_dir)
    a, _ = load_variant(aligned_dir)
    cfg = ContrastConfig(max_new_tokens=4, batch_size=4)
    index = contrast_index(contrast_statistics(a, u, generate_sequences(u, tok, PROMPTS, cfg), tok.pad_token_id, cfg),
                           u.config, meta={})
    index.write(tmp_path / "contrast.parquet")
    write_table(pa.table({"id": ["b0", "b1"], "prompt": PROMPTS[:2], "label": ["benign"] * 2, "category": ["c"] * 2}),
                tmp_path / "text.parquet")
    out = perplexity_file(base_dir, aligned_dir, tmp_path / "contrast.parquet", tmp_path / "text.parquet",
                          ks={"0.1": 0.1, "all": len(index)}, seed=0)
    assert set(out) == {"text", "unaligned", "aligned", "safety_k0.1", "random_k0.1", "safety_kall", "random_kall"}
    assert out["unaligned"] == perplexity(u, tok, PROMPTS[:2])
    assert out["safety_k0.1"]["neurons"] == len(select_neurons(index, 0.1, "safety", 0)) < len(index)
    # every neuron of every layer guided by A gives A's MLP activations, not A: U's attention stays U's
    assert out["safety_kall"]["neurons"] == len(index) and out["safety_kall"]["perplexity"] != out["safety_k0.1"][
        "perplexity"]


def test_fused_mode_scales_each_module_as_peft_does_with_alpha_and_rank_patterns(tiny_base, tmp_path):
    """An adapter whose modules have their own alpha and rank: the fused guide must use each module's scale."""
    from peft.tuners.lora import LoraLayer

    from neuronkit.patching import guide_adapter

    aligned = _lora_checkpoint(tiny_base, tmp_path / "aligned", ["gate_proj", "up_proj", "q_proj"], seed=4,
                               alpha_pattern={"up_proj": 32}, rank_pattern={"gate_proj": 2})
    peft_model, _ = load_variant(aligned, merge=False)
    expected = {name.removeprefix("base_model.model."): module.scaling["default"]
                for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)}
    kind, modules = guide_adapter(aligned)
    got = {path: scale for path, (_, _, scale) in modules.items()}
    assert kind == "LORA"
    assert got == pytest.approx(expected) and len(set(got.values())) == 3  # 8/4, 32/4 and 8/2
    u, tok = load_variant(tiny_base)
    a, _ = load_variant(aligned)
    enc = _enc(tok, PROMPTS)
    neurons = _all_neurons(u)
    with guided_two_model(u, a, neurons):
        two = _greedy(u, tok, enc, n=8)
    with guided_fused(u, guide_adapters(tiny_base, aligned), neurons):
        fused = _greedy(u, tok, enc, n=8)
    assert torch.equal(two, fused)


def test_change_shares_are_the_squared_change_the_patched_neurons_carry():
    """Top-k by S carries the largest share of sum S^2 any k neurons can; the random control its own share."""
    from neuronkit.patching import change_shares, select_neurons

    scores = torch.tensor([[4.0, 2.0, 1.0, 1.0], [2.0, 1.0, 1.0, 0.0]])  # S^2 sums to 28
    index = NeuronIndex.from_scores({"mlp": scores}, {"shape": {"num_layers": 2, "sites": {"mlp": 4}}})
    shares = change_shares(index, {"2": 2, "0.5": 0.5}, seed=0)
    assert shares["2"]["safety"] == pytest.approx((16 + 4) / 28, abs=1e-4)  # 4.0 and the first 2.0
    assert shares["0.5"]["safety"] == pytest.approx((16 + 4 + 4 + 1) / 28, abs=1e-4)
    chosen = select_neurons(index, 2, "random", 0)
    by_hand = sum(float(scores[l, n]) ** 2 for l, n in zip(chosen.layer.tolist(), chosen.neuron.tolist())) / 28
    assert shares["2"]["random"] == pytest.approx(by_hand, abs=1e-4) and shares["2"]["random"] <= shares["2"]["safety"]
    zero = NeuronIndex.from_scores({"mlp": torch.zeros(2, 4)}, {"shape": {"num_layers": 2, "sites": {"mlp": 4}}})
    assert change_shares(zero, {"2": 2})["2"] == {"safety": None, "random": None}
