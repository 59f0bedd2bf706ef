"""SNIP, Wanda and low-rank scores on LoRA factors against hand computations on a tiny model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from neuronkit.conversation import answer_text
from neuronkit.models import _load_tiny
from neuronkit.modelspec import TinySpec
from neuronkit.lora import factor_keys
from neuronkit.scores import adapter_scores as S

TARGETS = ["q_proj", "down_proj"]
R, ALPHA = 4, 8
PROMPTS = ["How do I pick a lock?", "Say hi.", "Write a short poem about rain please."]
ANSWERS = ["I can't help with that.", "Hi!", "Rain taps softly."]


def _random_lora(model, seed: int) -> None:
    """Give every LoRA factor seeded non-zero values (lora_B starts at zero in peft)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.fixture(scope="module")
def peft_model():
    from peft import LoraConfig, get_peft_model

    model, tok = _load_tiny(TinySpec())
    pm = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS))
    _random_lora(pm, seed=1)
    pm.eval()
    return pm, tok


@pytest.fixture(scope="module")
def batches(peft_model):
    _, tok = peft_model
    return S.calibration_batches(tok, PROMPTS, ANSWERS, batch_size=2, max_length=128)


def _merged_copy(pm):
    """A plain HF model with W0 + s B A in the adapted modules, and the factors by module name."""
    model, _ = _load_tiny(TinySpec())
    factors = {}
    for name, (a, b) in S.live_lora_layers(pm).items():
        target = model.get_submodule(name.removeprefix("base_model.model."))
        A, B = a.weight.detach().clone(), b.weight.detach().clone()
        target.weight.data = target.weight.data + (ALPHA / R) * (B @ A)
        factors[name] = (target, A, B)
    return model.eval(), factors


def _samples(batches):
    """Unpadded (ids, labels) of every calibration example."""
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][i].sum())
            yield batch["input_ids"][i:i + 1, :n], batch["labels"][i:i + 1, :n]


def _hand_loss(model, ids, labels):
    """Mean next-token CE over answer tokens, written out."""
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    target = labels[0, 1:]
    keep = target != -100
    return -logp[keep, target[keep]].mean()


def _hand_inputs(model, factors, batches):
    """Module inputs X over loss positions, per module, from plain forward hooks."""
    xs = {n: [] for n in factors}
    for ids, labels in _samples(batches):
        pos = torch.zeros(ids.shape[1], dtype=torch.bool)
        pos[:-1] = labels[0, 1:] != -100
        grabbed = {}
        handles = [t.register_forward_hook(lambda m, i, o, n=n: grabbed.__setitem__(n, i[0][0].detach()))
                   for n, (t, _, _) in factors.items()]
        try:
            with torch.no_grad():
                model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
        for n in factors:
            xs[n].append(grabbed[n][pos].double())
    return {n: torch.cat(v) for n, v in xs.items()}


def test_calibration_labels_cover_answer_only(peft_model):
    _, tok = peft_model
    (batch,) = S.calibration_batches(tok, PROMPTS[:1], ANSWERS[:1], batch_size=4)
    turn = answer_text(tok, PROMPTS[0], ANSWERS[0])  # the answer and the template's end-of-turn marks
    assert turn.startswith(ANSWERS[0]) and len(turn) > len(ANSWERS[0])
    n_answer = len(tok(turn, add_special_tokens=False)["input_ids"])
    labels = batch["labels"][0]
    assert int((labels != -100).sum()) == n_answer
    assert torch.equal(labels[-n_answer:], batch["input_ids"][0, -n_answer:])
    assert int(S.loss_positions(batch["labels"]).sum()) == n_answer


def test_snip_matches_hand_chain_rule(peft_model, batches):
    pm, _ = peft_model
    got = S.snip_scores(pm, batches)
    model, factors = _merged_copy(pm)
    totals = {n: [torch.zeros_like(A, dtype=torch.float64), torch.zeros_like(B, dtype=torch.float64)]
              for n, (_, A, B) in factors.items()}
    for ids, labels in _samples(batches):
        weights = [t.weight for t, _, _ in factors.values()]
        grads = torch.autograd.grad(_hand_loss(model, ids, labels), weights)
        for (n, (_, A, B)), g in zip(factors.items(), grads):
            g = g.double() * (ALPHA / R)          # dL/d(BA) = s dL/dW
            totals[n][0] += (B.double().T @ g).abs()
            totals[n][1] += (g @ A.double().T).abs()
    for n, (_, A, B) in factors.items():
        ka, kb = factor_keys(n)
        torch.testing.assert_close(got[ka], A.double().abs() * totals[n][0], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(got[kb], B.double().abs() * totals[n][1], rtol=1e-4, atol=1e-9)
    assert all(p.requires_grad for n, p in pm.named_parameters() if "lora_" in n)  # restored


def test_wanda_matches_hand_norms(peft_model, batches):
    pm, _ = peft_model
    got = S.wanda_scores(pm, batches)
    model, factors = _merged_copy(pm)
    xs = _hand_inputs(model, factors, batches)
    for n, (_, A, B) in factors.items():
        ka, kb = factor_keys(n)
        z = xs[n] @ A.double().T                           # lora_B's input: lora_A's output
        torch.testing.assert_close(got[ka], A.double().abs() * xs[n].norm(dim=0)[None], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(got[kb], B.double().abs() * z.norm(dim=0)[None], rtol=1e-4, atol=1e-9)


def test_lowrank_matches_direct_svd(peft_model, batches):
    pm, _ = peft_model
    got = S.lowrank_scores(pm, batches, rank_fraction=0.8)
    model, factors = _merged_copy(pm)
    xs = _hand_inputs(model, factors, batches)
    k = int(0.8 * R)  # 3
    for n, (_, A, B) in factors.items():
        ka, kb = factor_keys(n)
        for key, w, x in ((ka, A.double(), xs[n]), (kb, B.double(), xs[n] @ A.double().T)):
            _, _, vh = torch.linalg.svd(x @ w.T, full_matrices=False)   # Y = X W^T, V = right singular vectors
            v = vh[:k].T
            expected = (v @ v.T @ w).abs()
            torch.testing.assert_close(got[key], expected, rtol=1e-4, atol=1e-7)
            assert torch.linalg.matrix_rank(v @ v.T @ w) <= k


def test_lowrank_full_rank_fraction_is_identity(peft_model, batches):
    pm, _ = peft_model
    got = S.lowrank_scores(pm, batches, rank_fraction=1.0)
    weights = S._weights(pm)
    for key, w in weights.items():
        torch.testing.assert_close(got[key], w.abs(), rtol=1e-6, atol=1e-8)


def test_top_fraction_mask_per_row_and_tensor():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [1.0, 1.0, 0.0, 0.2, 0.4]])
    row = S.top_fraction_mask(score, 0.4, "row")
    assert row.tolist() == [[False, True, False, False, True], [True, True, False, False, False]]
    whole = S.top_fraction_mask(score, 0.2, "tensor")
    assert whole.tolist() == [[False, False, False, False, False], [True, True, False, False, False]]
    assert S.keep_count(4, 0.2) == 1 and S.keep_count(32, 0.2) == 6 and S.keep_count(3, 1.0) == 3


def test_masks_default_granularity(peft_model, batches):
    pm, _ = peft_model
    for method, per_row in (("wanda", True), ("lowrank", False)):
        cfg = S.ScoreConfig(method=method)
        masks = S.masks_from_scores(S.adapter_scores(pm, batches, cfg), cfg)
        for m in masks.values():
            if per_row:
                assert (m.sum(1) == S.keep_count(m.shape[1], 0.2)).all()
            else:
                assert int(m.sum()) == S.keep_count(m.numel(), 0.2)


def test_score_config_errors():
    with pytest.raises(ValueError, match="method"):
        S.ScoreConfig(method="magnitude")
    with pytest.raises(ValueError, match="keep_fraction"):
        S.ScoreConfig(keep_fraction=0.0)
    with pytest.raises(ValueError, match="granularity"):
        S.ScoreConfig(granularity="column")
    with pytest.raises(ValueError, match="rank_fraction"):
        S.ScoreConfig(rank_fraction=1.5)


def test_score_adapter_writes_deterministic_masks(tiny_base, tmp_path):
    from peft import LoraConfig, get_peft_model

    from neuronkit import manifest
    from neuronkit.models import load_variant

    model, _ = load_variant(tiny_base, device=torch.device("cpu"))
    pm = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS))
    _random_lora(pm, seed=3)
    adapter = tmp_path / "reference"
    pm.save_pretrained(str(adapter))
    manifest.write(adapter, manifest.Variant(name="reference", model="tiny", kind="adapter",
                                             parent=os.path.relpath(tiny_base, adapter), method="expo"))
    cfg = S.ScoreConfig(method="snip", batch_size=2)
    outs = [tmp_path / f"run{i}" / "snip.safetensors" for i in range(2)]
    for out in outs:
        S.score_adapter(adapter, PROMPTS, ANSWERS, out, cfg, device=torch.device("cpu"),
                        scores_path=out.with_name("snip_scores.safetensors"))
    assert outs[0].read_bytes() == outs[1].read_bytes()
    scores = [out.with_name("snip_scores.safetensors") for out in outs]
    assert scores[0].read_bytes() == scores[1].read_bytes()
    assert S.sidecar_path(outs[0]).read_bytes() == S.sidecar_path(outs[1]).read_bytes()
    meta = json.loads(S.sidecar_path(outs[0]).read_text())
    assert meta["method"] == "snip" and meta["granularity"] == "row" and meta["keep_fraction"] == 0.2
    masks = S.load_masks(outs[0])
    assert len(masks) == 2 * len(TARGETS) * 2 and all(m.dtype == torch.bool for m in masks.values())
    assert meta["summary"]["kept"] == sum(int(m.sum()) for m in masks.values())
    from safetensors.torch import load_file

    saved = load_file(str(scores[0]))
    assert set(saved) == set(masks) and all(v.dtype == torch.float32 for v in saved.values())
    # the masks keep each row's top 20% of exactly these scores
    for key, mask in masks.items():
        rows = saved[key]
        for row, kept in zip(rows, mask):
            assert kept.sum() >= 1
            if (~kept).any():
                assert row[kept].min() >= row[~kept].max()


def test_calibration_examples_keep_the_answers_judged_safe():
    import pyarrow as pa

    table = pa.table({"prompt": ["p0", "p1", "p2"], "response": ["a0", "a1", "a2"], "refused": [True, False, True]})
    assert S.calibration_examples(table) == (["p0", "p2"], ["a0", "a2"])
    assert S.calibration_examples(table, keep_all=True) == (["p0", "p1", "p2"], ["a0", "a1", "a2"])


def test_scoring_a_reference_with_no_safe_answer_names_the_calibration_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    scored = tmp_path / "harmful_train.parquet"
    pq.write_table(pa.table({"prompt": ["p0"], "response": ["a0"], "refused": [False]}), scored)
    with pytest.raises(ValueError, match=r"harmful_train\.parquet.*none of the reference's answers safe"):
        S.score_reference_file(tmp_path / "reference", scored, tmp_path / "masks.safetensors", S.ScoreConfig())
    assert not (tmp_path / "masks.safetensors").exists()
