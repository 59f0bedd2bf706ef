"""PLND: parallel scores equal brute-force deactivation; intersection, top-k/eps, determinism, bad input."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from neuronkit.archs import attn_module, head_dim, mlp_module, model_shape, site_sizes
from neuronkit.hooks import count_hooks, on_sites
from neuronkit.models import _load_tiny
from neuronkit.modelspec import TinySpec
from neuronkit.neurons import NeuronIndex
from neuronkit.scores.plnd import (IntersectionReducer, PLNDConfig, detect_neurons, plnd_importance, qualifying,
                                   rsn_neurons)

GQA = TinySpec(heads=4, kv_heads=2, seed=1)
MHA = TinySpec(heads=4, kv_heads=4, seed=2)
TOKENS = 12


def _model(spec: TinySpec):
    """A float64 eager tiny model with sharpened q/k so attention is far from uniform."""
    model, tok = _load_tiny(spec)
    model.set_attn_implementation("eager")
    model = model.double().eval()
    with torch.no_grad():
        for layer in range(spec.layers):
            attn_module(model, layer, "q").weight.mul_(6)
            attn_module(model, layer, "k").weight.mul_(6)
    return model, tok


@pytest.fixture(scope="module", params=[GQA, MHA], ids=["gqa", "mha"])
def tiny(request):
    model, tok = _model(request.param)
    ids = torch.randint(3, 250, (1, TOKENS), generator=torch.Generator().manual_seed(7))
    return model, tok, ids, plnd_importance(model, ids)


@contextmanager
def _output_of(module: torch.nn.Module):
    """Record a module's output (the brute-force measuring point)."""
    store = {}
    handle = module.register_forward_hook(lambda _m, _a, out: store.__setitem__("out", out.detach()))
    try:
        yield store
    finally:
        handle.remove()


def _one_dim_per_row(n: int):
    """Site edit: batch row j zeroes dim j; the last row is the untouched baseline."""
    def fn(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        rows = torch.arange(n)
        t[rows, :, rows] = 0
        return t
    return fn


def _brute_output_change(model, ids, layer, module, measured):
    """||change of a module's output||_F when each dim of a site is zeroed, one at a time."""
    n = site_sizes(model.config)[module]
    with torch.no_grad(), on_sites(model, {(layer, module): _one_dim_per_row(n)}), _output_of(measured) as got:
        model(ids.expand(n + 1, -1))
    out = got["out"]
    return (out[:n] - out[n:]).flatten(1).norm(dim=1)


def _brute_prob_change(model, ids, layer, module):
    """Per (zeroed dim, head) Frobenius change of the attention probabilities, one dim at a time."""
    n = site_sizes(model.config)[module]
    with torch.no_grad(), on_sites(model, {(layer, module): _one_dim_per_row(n)}):
        att = model(ids.expand(n + 1, -1), output_attentions=True).attentions[layer]
    return (att[:n] - att[n:]).flatten(2).norm(dim=2)  # [n, heads]


def _close(parallel: torch.Tensor, brute: torch.Tensor) -> None:
    torch.testing.assert_close(parallel, brute.float(), rtol=2e-4, atol=1e-6 * float(brute.abs().max()))


def test_ffn_scores_equal_brute_force_deactivation(tiny):
    model, _, ids, scores = tiny
    for layer in range(model.config.num_hidden_layers):
        brute = _brute_output_change(model, ids, layer, "mlp", mlp_module(model, layer, "down"))
        assert brute.min() > 0
        _close(scores["mlp"][layer], brute)


@pytest.mark.parametrize("module", ["v", "o"])
def test_v_and_o_scores_equal_brute_force_attention_output_change(tiny, module):
    model, _, ids, scores = tiny
    for layer in range(model.config.num_hidden_layers):
        brute = _brute_output_change(model, ids, layer, module, attn_module(model, layer, "o"))
        _close(scores[module][layer], brute)


def test_q_scores_equal_brute_force_softmax_change_of_their_head(tiny):
    model, _, ids, scores = tiny
    hd = head_dim(model.config)
    for layer in range(model.config.num_hidden_layers):
        change = _brute_prob_change(model, ids, layer, "q")
        dims = torch.arange(change.shape[0])
        brute = change[dims, dims // hd]  # q dim j belongs to query head j // head_dim
        assert brute.max() > 1e-3  # the attention is sharp enough for the test to mean something
        _close(scores["q"][layer], brute)


def test_k_scores_equal_brute_force_over_the_query_heads_of_the_group(tiny):
    model, _, ids, scores = tiny
    cfg = model.config
    hd, group = head_dim(cfg), cfg.num_attention_heads // cfg.num_key_value_heads
    heads = torch.arange(cfg.num_attention_heads)
    for layer in range(cfg.num_hidden_layers):
        change = _brute_prob_change(model, ids, layer, "k")  # [kv dims, query heads]
        reads = (heads[None, :] // group) == (torch.arange(change.shape[0])[:, None] // hd)  # GQA: h // group
        brute = (change.pow(2) * reads).sum(dim=1).sqrt()
        assert (change * ~reads).abs().max() == 0  # heads of other groups are untouched
        _close(scores["k"][layer], brute)


def test_q_and_k_are_scored_separately(tiny):
    model, _, _, scores = tiny
    q, k = scores["q"], scores["k"]
    assert q.shape[1] == site_sizes(model.config)["q"] and k.shape[1] == site_sizes(model.config)["k"]
    if q.shape == k.shape:
        assert not torch.allclose(q, k)
    assert not torch.allclose(q[:, : k.shape[1]], k)


def test_scores_are_float32_cpu_and_hooks_are_removed(tiny):
    model, _, ids, scores = tiny
    assert set(scores) == {"mlp", "q", "k", "v", "o"}
    assert all(s.dtype == torch.float32 and s.device.type == "cpu" for s in scores.values())
    before = count_hooks(model)  # transformers keeps its own output_attentions recorders
    plnd_importance(model, ids)
    assert count_hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with on_sites(model, {(0, "mlp"): lambda t: (_ for _ in ()).throw(RuntimeError("boom"))}):
            plnd_importance(model, ids)
    assert count_hooks(model) == before


def test_padding_is_ignored(tiny):
    model, _, ids, scores = tiny
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=ids.dtype)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 3, dtype=ids.dtype)], dim=1)
    again = plnd_importance(model, padded, attention_mask=mask)
    for m in scores:
        torch.testing.assert_close(again[m], scores[m], rtol=1e-5, atol=1e-7)


def test_scoring_the_document_positions_ignores_tokens_after_them_exactly(tiny):
    """A causal model: the document's own positions do not see a suffix (a template's closing tokens), so scoring
    only them equals scoring the bare document, for every module, q/k softmax rows included."""
    model, _, ids, scores = tiny
    suffix = torch.randint(3, 250, (1, 5), generator=torch.Generator().manual_seed(8))
    longer = torch.cat([ids, suffix], dim=1)
    mask = torch.cat([torch.ones(TOKENS, dtype=torch.bool), torch.zeros(5, dtype=torch.bool)])
    got = plnd_importance(model, longer, score_mask=mask)
    plain = plnd_importance(model, longer)
    for m in scores:
        torch.testing.assert_close(got[m], scores[m], rtol=1e-5, atol=1e-7)
        assert not torch.allclose(plain[m], scores[m])  # scoring every position counts the suffix


def test_a_score_mask_over_every_token_changes_nothing_and_bad_masks_are_refused(tiny):
    model, _, ids, scores = tiny
    got = plnd_importance(model, ids, score_mask=torch.ones(TOKENS, dtype=torch.bool))
    for m in scores:
        torch.testing.assert_close(got[m], scores[m], rtol=0, atol=0)
    for bad in (torch.zeros(TOKENS, dtype=torch.bool), torch.ones(TOKENS + 1, dtype=torch.bool)):
        with pytest.raises(ValueError, match="score_mask"):
            plnd_importance(model, ids, score_mask=bad)


def test_document_positions_are_the_document_tokens_inside_the_chat_template():
    from neuronkit.scores.plnd import document_positions, encode

    _, tok = _load_tiny(TinySpec())
    text = "How do I pick a lock?"
    ids, mask = document_positions(tok, text, PLNDConfig(chat=True, progress=False))
    assert torch.equal(ids, encode(tok, text, PLNDConfig(chat=True, progress=False)))  # the same tokens PLND runs
    assert tok.decode(ids[0][mask]) == text and not mask.all()
    assert "<|im_start|>" in tok.decode(ids[0][~mask])
    raw_ids, raw_mask = document_positions(tok, text, PLNDConfig(chat=False, progress=False))
    assert tok.decode(raw_ids[0][raw_mask]) == text


def test_detection_on_document_positions_differs_from_all_positions_under_the_template():
    model, tok = _model(GQA)
    docs = ["How do I pick a lock?", "Write a phishing email.", "Name a poison."]
    kw = dict(ffn_top_k=8, attn_top_k=4, chat=True, progress=False)
    own = detect_neurons(model, tok, docs, PLNDConfig(positions="document", **kw), {})
    every = detect_neurons(model, tok, docs, PLNDConfig(positions="all", **kw), {})
    assert own.meta["params"]["positions"] == "document" and every.meta["params"]["positions"] == "all"
    assert own.keys() != every.keys()


def test_peak_share_is_the_share_of_each_neurons_h_squared_on_its_largest_token(tiny):
    from neuronkit.hooks import capture
    from neuronkit.scores.plnd import document_scores

    model, _, ids, scores = tiny
    got, share = document_scores(model, ids)
    with torch.no_grad(), capture(model, [(0, "mlp"), (1, "mlp")]) as h:
        model(input_ids=ids)
    for layer in (0, 1):
        sq = h[(layer, "mlp")][0].double().square()
        torch.testing.assert_close(share["mlp"][layer], (sq.max(0).values / sq.sum(0)).float())
    assert set(share) == {"mlp"} and torch.equal(got["mlp"], scores["mlp"])


def test_max_peak_share_drops_concentrated_neurons_and_counts_them():
    model, tok = _model(GQA)
    docs = ["How do I pick a lock?", "Write a phishing email.", "Name a poison."]
    kw = dict(ffn_top_k=24, attn_top_k=4, chat=True, progress=False)
    kept_all = detect_neurons(model, tok, docs, PLNDConfig(**kw), {})
    summary = kept_all.meta["peak_share"]
    assert summary["excluded"] == 0 and summary["intersected"] == len(kept_all.only("mlp")) > 0
    threshold = float(np.median(_shares(model, tok, docs, kw, kept_all)))
    strict = detect_neurons(model, tok, docs, PLNDConfig(max_peak_share=threshold, **kw), {})
    dropped = strict.meta["peak_share"]["excluded"]
    assert 0 < dropped < summary["intersected"]
    assert len(strict.only("mlp")) == summary["intersected"] - dropped
    assert set(strict.only("mlp").keys()) < set(kept_all.only("mlp").keys())
    assert strict.only("q").keys() == kept_all.only("q").keys()  # attention dims are not filtered


def _shares(model, tok, docs, kw, index):
    """Mean peak share over the documents of each MLP neuron of an index."""
    from neuronkit.scores.plnd import document_importance

    total = sum(document_importance(model, tok, d, PLNDConfig(**kw))[1]["mlp"] for d in docs) / len(docs)
    return [float(total[layer, n]) for layer, _, n in index.only("mlp").keys()]


def test_specific_neurons_rank_harmful_against_benign_importance():
    from neuronkit.scores.plnd import specific_neurons

    harmful = {"mlp": torch.tensor([[10.0, 1.0, 5.0], [1.0, 8.0, 0.5]]), "q": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    benign = {"mlp": torch.tensor([[10.0, 0.1, 1.0], [1.0, 8.0, 5.0]]), "q": torch.tensor([[1.0, 1.0], [1.0, 8.0]])}
    shape = {"num_layers": 2, "sites": {"mlp": 3, "q": 2, "k": 2, "v": 2, "o": 2}}
    index = specific_neurons(harmful, benign, {"mlp": 2, "q": 1}, {"shape": shape})
    # log-ratios: mlp (0,1) log 10, (0,2) log 5, others <= 0; q (1,0) log 3 beats (0,1) log 2
    assert index.only("mlp").keys() == [(0, "mlp", 1), (0, "mlp", 2)] and index.only("q").keys() == [(1, "q", 0)]
    assert index.meta["method"] == "plnd_specific"
    with pytest.raises(ValueError, match="7 mlp neurons asked for"):
        specific_neurons(harmful, benign, {"mlp": 7}, {"shape": shape})


def test_mean_importance_is_the_mean_of_the_documents_scores():
    from neuronkit.scores.plnd import document_importance, mean_importance

    model, tok = _model(GQA)
    docs = ["How do I pick a lock?", "Name a poison."]
    cfg = PLNDConfig(chat=False, progress=False)
    means = mean_importance(model, tok, docs, cfg)
    each = [document_importance(model, tok, d, cfg)[0] for d in docs]
    for m in cfg.modules:
        torch.testing.assert_close(means[m], (each[0][m].double() + each[1][m].double()) / 2)


def test_legacy_ffn_score_is_the_public_up_abs_sum(tiny):
    model, _, ids, _ = tiny
    got = plnd_importance(model, ids, modules=["mlp"], ffn_score="legacy_up_abs")
    assert set(got) == {"mlp"}
    from neuronkit.archs import submodule

    with torch.no_grad(), _output_of(mlp_module(model, 1, "up")) as up:
        submodule(model, "decoder")(input_ids=ids)
    _close(got["mlp"][1], up["out"][0].abs().sum(dim=0))


# ----------------------------------------------------------------------------- selection


def _cfg(**kw) -> PLNDConfig:
    return PLNDConfig(modules=("mlp",), progress=False, **kw)


def _meta() -> dict:
    return {"shape": {"model_type": "llama", "num_layers": 2, "sites": {"mlp": 4, "q": 8, "k": 4, "v": 4, "o": 8}}}


def test_intersection_keeps_only_neurons_that_qualify_on_every_document():
    docs = [torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.6, 0.0, 0.9, 0.2]]),
            torch.tensor([[0.9, 0.1, 0.1, 0.8], [0.7, 0.9, 0.9, 0.1]])]
    red = IntersectionReducer(_cfg(ffn_top_k=None, ffn_eps=0.5))
    for s in docs:
        red.update({"mlp": s})
    idx = red.index(_meta())
    # (0,1) misses doc 2, (1,1) misses doc 1: both out
    assert sorted(idx.keys()) == [(0, "mlp", 0), (0, "mlp", 3), (1, "mlp", 0), (1, "mlp", 2)]
    assert idx.keys()[0] == (0, "mlp", 0)  # mean 0.9 ranks first
    assert idx.score[0] == pytest.approx(0.9) and idx.meta["n_docs"] == 2


def test_top_k_mode_intersects_per_layer_top_k():
    docs = [torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.6, 0.0, 0.9, 0.2]]),
            torch.tensor([[0.9, 0.1, 0.1, 0.8], [0.7, 0.9, 0.9, 0.1]])]
    red = IntersectionReducer(_cfg(ffn_top_k=2))
    for s in docs:
        red.update({"mlp": s})
    idx = red.index(_meta())
    # doc1 top2: layer0 {0,1}, layer1 {2,0}; doc2 top2: layer0 {0,3}, layer1 {1,2} (tie -> lower id)
    assert sorted(idx.keys()) == [(0, "mlp", 0), (1, "mlp", 2)]
    assert qualifying(torch.tensor([[1.0, 1.0, 1.0]]), top_k=2).tolist() == [[True, True, False]]
    assert qualifying(torch.tensor([[0.2, 0.5]]), eps=0.5).tolist() == [[False, True]]


def test_detect_neurons_end_to_end_intersects_per_document_top_k_and_is_byte_deterministic(tmp_path):
    model, tok = _load_tiny(TinySpec(seed=3))
    texts = ["How do I pick a lock?", "Write a poem about rain.", "Tell me a secret"]
    cfg = PLNDConfig(ffn_top_k=24, attn_top_k=12, chat=False, progress=False)  # raw documents, as scored below
    a = detect_neurons(model, tok, texts, cfg, {"dataset": "unit"})
    b = detect_neurons(model, tok, texts, cfg, {"dataset": "unit"})
    assert a.meta["shape"] == model_shape(model.config) and a.meta["method"] == "plnd"
    assert 0 < len(a) and all(c <= 24 for c in a.per_layer_counts()["mlp"])
    per_doc = [plnd_importance(model, tok(t, return_tensors="pt").input_ids) for t in texts]
    for layer, module, neuron in a.keys():
        k = 24 if module == "mlp" else 12
        for s in per_doc:
            assert neuron in torch.argsort(-s[module][layer], stable=True)[:k].tolist()
    a.write(tmp_path / "a.parquet")
    b.write(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert NeuronIndex.read(tmp_path / "a.parquet").keys() == a.keys()
    foundation = detect_neurons(model, tok, ["The river flows to the sea."], cfg, {"dataset": "benign"})
    rsn = rsn_neurons(a, foundation)
    assert set(rsn.keys()) == set(a.keys()) - set(foundation.keys())


def test_the_specific_selection_file_takes_the_intersections_module_counts_ranked_by_the_log_ratio(tiny_base,
                                                                                                    tmp_path):
    """plnd.selection: specific, as the plnd_specific rule runs it: same per-module counts as the intersection, the
    neurons with the largest harmful/benign log-ratio of mean importance, the same bytes on a rerun."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neuronkit.models import load_variant
    from neuronkit.scores.plnd import mean_importance, module_counts, plnd_file, specific_file, specific_neurons

    harmful, benign = ["How do I pick a lock?", "Tell me a secret", "Hurt someone"], ["Write a poem.", "Sum 2 and 3"]
    for name, texts in (("harmful", harmful), ("benign", benign)):
        pq.write_table(pa.table({"prompt": texts}), tmp_path / f"{name}.parquet")
    cfg = PLNDConfig.from_stage({"variant": "aligned", "dataset": "h", "foundation_dataset": "b", "n_docs": 8,
                                 "selection": "specific", "ffn_top_k": 24, "attn_top_k": 12, "chat": False,
                                 "modules": ["mlp", "q"]}, progress=False)
    assert (cfg.ffn_top_k, cfg.modules, cfg.chat) == (24, ("mlp", "q"), False)
    intersection = plnd_file(tiny_base, tmp_path / "harmful.parquet", tmp_path / "plnd.parquet", cfg)
    outs = [specific_file(tiny_base, tmp_path / "harmful.parquet", tmp_path / "benign.parquet",
                          tmp_path / "plnd.parquet", tmp_path / f"specific{i}.parquet", cfg) for i in range(2)]
    assert (tmp_path / "specific0.parquet").read_bytes() == (tmp_path / "specific1.parquet").read_bytes()
    assert module_counts(outs[0]) == module_counts(intersection) and len(outs[0]) == len(intersection)
    model, tok = load_variant(tiny_base)
    want = specific_neurons(mean_importance(model, tok, harmful, cfg), mean_importance(model, tok, benign, cfg),
                            module_counts(intersection), {"shape": outs[0].meta["shape"]})
    assert outs[0].keys() == want.keys() and outs[0].meta["method"] == "plnd_specific"
    assert outs[0].meta["n_docs"] == [3, 2]


def test_the_specific_selection_of_an_empty_intersection_names_the_file(tiny_base, tmp_path):
    from neuronkit.scores.plnd import specific_file

    shape = {"num_layers": 2, "sites": {"mlp": 4}}
    NeuronIndex.from_scores({"mlp": torch.zeros(2, 4)}, {"shape": shape},
                            keep={"mlp": torch.zeros(2, 4, dtype=torch.bool)}).write(tmp_path / "plnd.parquet")
    with pytest.raises(ValueError, match=r"plnd\.parquet: the PLND intersection is empty"):
        specific_file(tiny_base, tmp_path / "h.parquet", tmp_path / "b.parquet", tmp_path / "plnd.parquet",
                      tmp_path / "out.parquet", PLNDConfig(progress=False))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, match", [
    ({"modules": ("mlp", "gate")}, "unknown module"),
    ({"modules": ()}, "non-empty"),
    ({"ffn_eps": 0.1}, "exactly one of ffn_top_k or ffn_eps"),
    ({"attn_top_k": None}, "exactly one of attn_top_k or attn_eps"),
    ({"ffn_top_k": 0}, "ffn_top_k must be an integer >= 1"),
    ({"ffn_score": "up"}, "unknown ffn_score"),
    ({"max_length": 0}, "max_length"),
    ({"positions": "prompt"}, "positions must be one of"),
    ({"max_peak_share": 0}, "max_peak_share must be a share"),
    ({"max_peak_share": 0.5, "ffn_score": "legacy_up_abs"}, "needs the exact MLP score"),
])
def test_bad_config_is_refused_clearly(kw, match):
    with pytest.raises(ValueError, match=match):
        PLNDConfig(**kw)


def test_bad_calls_are_refused_before_compute():
    model, tok = _load_tiny(TinySpec())
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="unknown module"):
        plnd_importance(model, ids, modules=["mlp", "attn"])
    with pytest.raises(ValueError, match="one document at a time"):
        plnd_importance(model, ids.expand(2, -1))
    with pytest.raises(ValueError, match="no documents"):
        detect_neurons(model, tok, [], PLNDConfig(progress=False))
    assert count_hooks(model) == 0


def test_encode_chat_wraps_and_truncates():
    from neuronkit.scores.plnd import encode

    _, tok = _load_tiny(TinySpec())
    raw = encode(tok, "hello", PLNDConfig(chat=False, progress=False))
    chat = encode(tok, "hello", PLNDConfig(chat=True, progress=False))
    assert chat.shape[1] > raw.shape[1] and "<|im_start|>" in tok.decode(chat[0])
    assert encode(tok, "a long document " * 20, PLNDConfig(max_length=16, chat=False, progress=False)).shape == (1, 16)
