"""NeuronIndex ranking, set algebra, controls, storage; site hooks capture, edit and always unhook."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from neuronkit.archs import model_shape, site_sizes
from neuronkit.hooks import capture, count_hooks, deactivated, mlp_sites, on_sites
from neuronkit.models import load_variant
from neuronkit.neurons import NeuronIndex, NeuronIndexError, resolve_k

SHAPE = {"model_type": "llama", "num_layers": 3, "sites": {"mlp": 4, "q": 8, "k": 4, "v": 4, "o": 8}}


def _index(scores=None, **kw):
    scores = scores if scores is not None else torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.5, 0.2, 0.9, 0.4], [0.8, 0.7, 0.6, 0.05]])
    return NeuronIndex.from_scores({"mlp": scores}, {"method": "test", "shape": SHAPE}, **kw)


def test_from_scores_ranks_globally_descending_with_stable_ties():
    idx = _index()
    assert idx.keys()[:3] == [(0, "mlp", 1), (1, "mlp", 2), (2, "mlp", 0)]  # 0.9 tie: site order wins
    assert np.all(np.diff(idx.score) <= 0)
    assert len(idx) == 12


def test_exclude_last_layers_drops_them_from_the_ranking():
    idx = _index(exclude_last_layers=1)
    assert set(idx.layer.tolist()) == {0, 1}
    assert idx.meta["exclude_last_layers"] == 1


def test_window_intersection_difference_and_counts():
    idx = _index()
    assert idx.window(1, 2).keys() == idx.keys()[1:3]
    top3, top5 = idx.top(3), idx.top(5)
    assert top5.intersect(top3).keys() == top3.keys()
    assert top5.difference(top3).keys() == idx.keys()[3:5]
    assert top3.per_layer_counts() == {"mlp": [1, 1, 1]}


def test_random_control_keeps_per_layer_counts_and_is_seeded():
    idx = _index().top(5)
    a, b, c = idx.random_like(1), idx.random_like(1), idx.random_like(2)
    assert a.per_layer_counts() == idx.per_layer_counts()
    assert a.keys() == b.keys()
    assert set(a.keys()) != set(c.keys())  # another seed draws other neurons
    assert len(set(a.keys())) == len(a)


def test_magnitude_matched_control_keeps_counts_avoids_the_index_and_is_seeded():
    idx = _index().top(4)
    magnitude = {"mlp": torch.tensor([[1.0, 2.0, 4.0, 8.0], [1.0, 100.0, 101.0, 2.0], [5.0, 50.0, 6.0, 7.0]])}
    a, b = idx.magnitude_matched_like(magnitude, 1, window=1), idx.magnitude_matched_like(magnitude, 1, window=1)
    assert a.keys() == b.keys() and a.per_layer_counts() == idx.per_layer_counts()
    assert not set(a.keys()) & set(idx.keys()) and a.meta["control"] == "magnitude"
    # window 1: each neuron's nearest free neighbour in log magnitude, largest first (layer 1: 2 -> 1 (101 -> 100))
    chosen = {(layer, n) for layer, _, n in a.keys()}
    top = {(layer, n) for layer, _, n in idx.keys()}
    assert (1, 2) in top and (1, 1) in chosen
    wide = [set(idx.magnitude_matched_like(magnitude, s, window=3).keys()) for s in range(6)]
    assert len({frozenset(w) for w in wide}) > 1  # a wider window draws among several neighbours


def test_magnitude_matched_control_refuses_bad_input():
    idx = _index().top(4)
    with pytest.raises(NeuronIndexError, match="no magnitudes for module 'mlp'"):
        idx.magnitude_matched_like({}, 0)
    with pytest.raises(NeuronIndexError, match="shape"):
        idx.magnitude_matched_like({"mlp": torch.ones(2, 4)}, 0)
    with pytest.raises(NeuronIndexError, match="window must be >= 1"):
        idx.magnitude_matched_like({"mlp": torch.ones(3, 4)}, 0, window=0)
    full = _index()  # every neuron indexed: nothing is left to match with
    with pytest.raises(NeuronIndexError, match="only 0 others"):
        full.magnitude_matched_like({"mlp": torch.ones(3, 4)}, 0)


def test_masks_and_by_layer_agree():
    idx = _index().top(4)
    mask = idx.masks()["mlp"]
    assert int(mask.sum()) == 4
    for layer, ids in idx.by_layer("mlp").items():
        assert mask[layer, ids].all()


def test_write_read_roundtrip_is_byte_deterministic(tmp_path):
    idx = _index()
    idx.write(tmp_path / "a.parquet")
    idx.write(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    back = NeuronIndex.read(tmp_path / "a.parquet")
    assert back.keys() == idx.keys() and back.meta == idx.meta
    table = pq.read_table(tmp_path / "a.parquet")  # readable without neuronkit
    assert table.schema.field("layer").type == "int16" and table.column("rank").to_pylist() == list(range(12))
    assert (tmp_path / "a.json").exists()


def test_resolve_k_counts_and_fractions():
    assert resolve_k(0.05, 1000) == 50
    assert resolve_k(30, 1000) == 30
    with pytest.raises(NeuronIndexError, match="exceeds the 1000"):  # a count above the total is refused, not cut
        resolve_k(5000, 1000)
    assert resolve_k(2.0, 1000) == 2 and resolve_k(1000, 1000) == 1000
    with pytest.raises(NeuronIndexError, match="fraction"):
        resolve_k(2.5, 1000)


def test_index_for_another_model_is_refused(tiny_base):
    model, _ = load_variant(tiny_base)
    other = dict(SHAPE, num_layers=7)
    idx = NeuronIndex.from_scores({"mlp": torch.rand(7, 4)}, {"shape": other})
    with pytest.raises(NeuronIndexError, match="7 layers"):
        idx.check_fits(model.config)
    ok = NeuronIndex.from_scores({"mlp": torch.rand(2, site_sizes(model.config)["mlp"])}, {"shape": model_shape(model.config)})
    ok.check_fits(model.config)


def test_capture_sees_down_proj_input_and_deactivation_zeroes_it(tiny_base):
    model, _ = load_variant(tiny_base)
    ids = torch.tensor([[5, 6, 7, 8]])
    with capture(model, mlp_sites(model)) as store:
        model(ids)
    h = store[(0, "mlp")]
    assert h.shape[-1] == model.config.intermediate_size
    shape = model_shape(model.config)
    idx = NeuronIndex.from_scores({"mlp": torch.rand(2, shape["sites"]["mlp"])}, {"shape": shape}).top(10)
    with deactivated(model, idx), capture(model, mlp_sites(model)) as after:
        model(ids)
    for layer, neurons in idx.by_layer("mlp").items():
        assert torch.all(after[(layer, "mlp")][..., neurons] == 0)
    assert count_hooks(model) == 0


def test_hooks_are_removed_when_the_forward_raises(tiny_base):
    model, _ = load_variant(tiny_base)

    def boom(_t):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError, match="inside a hook"):
        with on_sites(model, {(0, "q"): boom, (1, "o"): boom}):
            model(torch.tensor([[1, 2, 3]]))
    assert count_hooks(model) == 0
