"""Cross-method overlap: Jaccard and Spearman against hand computations, mask-to-neuron mapping, errors, JSON, plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuronkit.neurons import NeuronIndex
from neuronkit.overlap import (OverlapConfig, OverlapError, adapter_neuron_scores, overlap_section, plot_overlap,
                               spearman, tie_broken, top_k)
from neuronkit.scores.adapter_scores import save_masks

SITES = {"mlp": 6, "q": 4, "k": 2, "v": 2, "o": 4}
SHAPE = {"model_type": "llama", "num_layers": 2, "sites": SITES}
PREFIX = "base_model.model.model.layers"


def _index(tmp_path, name: str, entries: dict[tuple[int, str, int], float], shape: dict = SHAPE) -> str:
    """Write a NeuronIndex of (layer, module, neuron) -> score and return its path."""
    keys = list(entries)
    index = NeuronIndex([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                        [entries[k] for k in keys], {"method": name, "shape": shape})
    return str(index.write(tmp_path / f"{name}.parquet"))


# Layer 0: A lists neurons 0,1,2 and B lists 1,2,3,4; layer 1: A lists 5 and B lists 0,5.
A = {(0, "mlp", 0): 3.0, (0, "mlp", 1): 2.0, (0, "mlp", 2): 1.0, (1, "mlp", 5): 0.5}
B = {(0, "mlp", 1): 4.0, (0, "mlp", 2): 3.0, (0, "mlp", 3): 2.0, (0, "mlp", 4): 1.0, (1, "mlp", 0): 5.0,
     (1, "mlp", 5): 0.1}


def _pair(section: dict, module: str = "mlp") -> dict:
    (pair,) = [p for p in section["pairs"] if p["module"] == module]
    return pair


def test_jaccard_matches_hand_computation(tmp_path):
    section = overlap_section({"a": _index(tmp_path, "a", A), "b": _index(tmp_path, "b", B)})
    pair = _pair(section)
    # k = min(4, 6) = 4; top-4 of B = (1,0),(0,1),(0,2),(0,3); shared with A: (0,1),(0,2) -> 2 / 6
    assert pair["k"] == 4
    assert pair["jaccard"] == pytest.approx(2 / 6)
    assert pair["jaccard_random"] == pytest.approx(4 / (2 * 12 - 4))
    layer0, layer1 = pair["per_layer"]
    assert (layer0["k"], layer0["jaccard"]) == (3, pytest.approx(2 / 4))  # {0,1,2} vs {1,2,3}
    assert (layer1["k"], layer1["jaccard"]) == (1, 0.0)  # {5} vs {0}


def test_spearman_with_ties_matches_hand_computation(tmp_path):
    # ranks (1, 2.5, 2.5, 4) and (1, 4, 2.5, 2.5): cov 2.25, variances 4.5 -> 0.5
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 3, 2, 2])) == pytest.approx(0.5)
    section = overlap_section({"a": _index(tmp_path, "a", A), "b": _index(tmp_path, "b", B)})
    layer0, layer1 = _pair(section)["per_layer"]
    # layer 1: A = [-inf x5, .5] -> ranks (3,3,3,3,3,6); B = [5, -inf x4, .1] -> ranks (6,2.5,2.5,2.5,2.5,5)
    assert layer1["spearman"] == pytest.approx(4.5 / math.sqrt(7.5 * 12.5))
    # layer 0: ranks (6,5,4,2,2,2) and (1.5,6,5,4,3,1.5)
    assert layer0["spearman"] == pytest.approx(2.5 / math.sqrt(15.5 * 17))


def test_spearman_is_none_for_a_constant_side():
    assert spearman(np.full(5, -np.inf), np.arange(5.0)) is None
    assert spearman(np.arange(5.0), np.arange(5.0)[::-1]) == pytest.approx(-1.0)


def test_identical_methods_agree_fully(tmp_path):
    path = _index(tmp_path, "a", {**A, (0, "q", 1): 1.0, (1, "q", 3): 2.0})
    section = overlap_section({"a": path, "a_again": path})
    for module in ("mlp", "q"):
        pair = _pair(section, module)
        assert (pair["jaccard"], pair["spearman"]) == (1.0, pytest.approx(1.0))
    assert section["matrix"]["mlp"]["jaccard"] == [[1.0, 1.0], [1.0, 1.0]]


def test_disjoint_methods_have_zero_jaccard(tmp_path):
    other = {(0, "mlp", 5): 1.0, (1, "mlp", 0): 1.0, (1, "mlp", 1): 1.0, (1, "mlp", 2): 1.0}
    pair = _pair(overlap_section({"a": _index(tmp_path, "a", A), "b": _index(tmp_path, "b", other)}))
    assert pair["jaccard"] == 0.0
    assert pair["k"] == 4


@pytest.mark.parametrize("dense_k", [3, 0.25], ids=["count", "fraction"])
def test_dense_method_selects_top_dense_k(tmp_path, dense_k):
    full = {(layer, "mlp", n): float(layer * 6 + n) for layer in range(2) for n in range(6)}  # scores all 12
    section = overlap_section({"full": _index(tmp_path, "full", full), "a": _index(tmp_path, "a", A)},
                              OverlapConfig(dense_k=dense_k))
    pair = _pair(section)
    summary = {m["name"]: m["modules"]["mlp"] for m in section["methods"]}
    assert summary["full"] == {"covered": 12, "selected": 3, "dense": True}
    assert summary["a"]["dense"] is False
    # k = min(3, 4) = 3: full's top-3 is layer 1 neurons 3,4,5; A's top-3 is layer 0 neurons 0,1,2
    assert (pair["k"], pair["jaccard"]) == (3, 0.0)
    assert [layer["k"] for layer in pair["per_layer"]] == [0, 1]
    assert pair["per_layer"][0]["jaccard"] is None


def test_top_k_breaks_ties_by_layer_then_neuron():
    scores = np.array([[1.0, 2.0, 2.0], [2.0, 0.0, 2.0]])
    assert top_k(scores, 2).tolist() == [[False, True, True], [False, False, False]]
    assert tie_broken(scores, 2) == 2  # both picked from the four tied at 2.0
    assert tie_broken(scores, 4) == 0


def _mask_dict() -> dict[str, torch.Tensor]:
    """Two layers, rank 2, 3 MLP neurons, hidden 4; layer 1 has no attention adapters."""
    t = lambda rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731
    return {
        f"{PREFIX}.0.mlp.gate_proj.lora_B.weight": t([[1, 1], [0, 0], [1, 0]]),  # [I=3, r]
        f"{PREFIX}.0.mlp.up_proj.lora_B.weight": t([[1, 0], [0, 0], [0, 0]]),
        f"{PREFIX}.0.mlp.down_proj.lora_A.weight": t([[1, 0, 0], [1, 0, 1]]),  # [r, I=3]: neuron = column
        f"{PREFIX}.0.mlp.gate_proj.lora_A.weight": torch.ones(2, 4, dtype=torch.bool),  # hidden side: ignored
        f"{PREFIX}.0.mlp.down_proj.lora_B.weight": torch.ones(4, 2, dtype=torch.bool),
        f"{PREFIX}.0.self_attn.q_proj.lora_B.weight": t([[0, 0], [1, 1], [0, 0], [0, 1]]),  # q rows
        f"{PREFIX}.0.self_attn.k_proj.lora_B.weight": t([[1, 0], [0, 0]]),
        f"{PREFIX}.0.self_attn.v_proj.lora_B.weight": t([[0, 0], [0, 1]]),
        f"{PREFIX}.0.self_attn.o_proj.lora_A.weight": t([[0, 1, 0, 0], [0, 1, 1, 0]]),  # o input = column
        f"{PREFIX}.0.self_attn.o_proj.lora_B.weight": torch.ones(4, 2, dtype=torch.bool),
        f"{PREFIX}.1.mlp.gate_proj.lora_B.weight": t([[0, 0], [0, 0], [0, 1]]),
        f"{PREFIX}.1.mlp.up_proj.lora_B.weight": t([[0, 0], [1, 1], [0, 0]]),
        f"{PREFIX}.1.mlp.down_proj.lora_A.weight": t([[0, 0, 0], [0, 0, 0]]),
    }


def test_masks_map_to_neurons_by_hand():
    scores, ignored = adapter_neuron_scores(_mask_dict(), kind="masks")
    assert ignored == 3
    assert set(scores) == {"mlp", "q", "k", "v", "o"}
    # mlp neuron j: gate_B row j + up_B row j + down_A column j, out of 2 + 2 + 2 entries
    np.testing.assert_allclose(scores["mlp"], [[5 / 6, 0, 2 / 6], [0, 2 / 6, 1 / 6]])
    np.testing.assert_allclose(scores["q"][0], [0, 1, 0, 0.5])
    np.testing.assert_allclose(scores["k"][0], [0.5, 0])
    np.testing.assert_allclose(scores["v"][0], [0, 0.5])
    np.testing.assert_allclose(scores["o"][0], [0, 1, 0.5, 0])
    for module in ("q", "k", "v", "o"):
        assert np.isneginf(scores[module][1]).all()  # no attention adapter in layer 1


def test_mask_method_against_an_index(tmp_path):
    masks = save_masks(_mask_dict(), tmp_path / "lowrank_masks.safetensors", {"method": "lowrank"})
    shape = {"model_type": "llama", "num_layers": 2, "sites": {"mlp": 3, "q": 4, "k": 2, "v": 2, "o": 4}}
    plnd = _index(tmp_path, "plnd", {(0, "mlp", 2): 9.0, (1, "mlp", 1): 1.0, (0, "o", 1): 1.0}, shape)
    section = overlap_section({"plnd": plnd, "lowrank": str(masks)})
    lowrank = next(m for m in section["methods"] if m["name"] == "lowrank")
    assert lowrank["modules"]["mlp"]["selected"] == 4  # neurons with a kept entry: (0,0),(0,2),(1,1),(1,2)
    pair = _pair(section)
    # k = 2; lowrank's top-2: (0,0) 5/6 and then (0,2) 2/6 before (1,1) 2/6 by the (layer, neuron) tie-break
    assert (pair["k"], pair["jaccard"], pair["tie_broken"]) == (2, pytest.approx(1 / 3), {"a": 0, "b": 1})
    assert _pair(section, "o")["jaccard"] == 1.0
    assert section["matrix"]["q"]["labels"] == ["lowrank"]  # plnd lists no q neuron here: no q pair


def test_mask_files_alone_are_compared_on_the_layers_they_imply(tmp_path):
    full = save_masks(_mask_dict(), tmp_path / "full.safetensors", {})
    layer0 = {k: v for k, v in _mask_dict().items() if ".layers.0." in k}
    first_layer = save_masks(layer0, tmp_path / "l0.safetensors", {})
    section = overlap_section({"l0": str(first_layer), "full": str(full)})
    pair = _pair(section)
    assert len(pair["per_layer"]) == 2  # l0 is padded with an uncovered layer 1
    # l0 selects (0,0),(0,2); full's top-2 is the same two neurons
    assert (pair["k"], pair["jaccard"]) == (2, 1.0)
    assert pair["per_layer"][1]["spearman"] is None


def test_different_model_shapes_are_refused_naming_both_files(tmp_path):
    other = dict(SHAPE, num_layers=3)
    a, b = _index(tmp_path, "a", A), _index(tmp_path, "b", B, other)
    with pytest.raises(OverlapError) as err:
        overlap_section({"a": a, "b": b})
    assert a in str(err.value) and b in str(err.value)


def test_masks_of_another_model_are_refused_naming_both_files(tmp_path):
    masks = save_masks(_mask_dict(), tmp_path / "m.safetensors", {})
    a = _index(tmp_path, "a", A)  # 6 MLP neurons per layer, the masks have 3
    with pytest.raises(OverlapError) as err:
        overlap_section({"a": a, "m": str(masks)})
    assert a in str(err.value) and "m.safetensors" in str(err.value)


def test_bad_config_and_file_kinds_are_refused(tmp_path):
    with pytest.raises(OverlapError, match="dense_k"):
        OverlapConfig(dense_k=1.5)
    with pytest.raises(OverlapError, match="modules"):
        OverlapConfig(modules=("mlp", "attn"))
    with pytest.raises(OverlapError, match="notes.txt"):
        overlap_section({"a": _index(tmp_path, "a", A), "x": str(tmp_path / "notes.txt")})


def test_section_is_strict_json_with_none_for_undefined(tmp_path):
    # b lists nothing in layer 1, so its layer-1 scores are constant: Spearman and Jaccard undefined there
    b = {(0, "mlp", 0): 1.0, (0, "mlp", 3): 2.0}
    section = overlap_section({"a": _index(tmp_path, "a", A), "b": _index(tmp_path, "b", b)})
    text = json.dumps(section, allow_nan=False)
    layer1 = _pair(json.loads(text))["per_layer"][1]
    assert layer1["spearman"] is None and layer1["jaccard"] is None


def test_plot_writes_the_same_png_twice(tmp_path):
    section = overlap_section({"a": _index(tmp_path, "a", A), "b": _index(tmp_path, "b", B),
                               "c": _index(tmp_path, "c", {(0, "q", 1): 1.0, (0, "mlp", 4): 2.0})})
    first, second = tmp_path / "one.png", tmp_path / "two.png"
    plot_overlap(section, first)
    plot_overlap(section, second)
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()


def _score_dict() -> dict[str, torch.Tensor]:
    """Float entry scores on the mask dict's layout (signs must not matter: scores are taken absolute)."""
    return {k: torch.where(v, 2.0, -0.5) * (1 + torch.arange(v.numel()).reshape(v.shape) % 2)
            for k, v in _mask_dict().items()}


def test_entry_scores_map_to_mean_absolute_score_per_neuron():
    scores, ignored = adapter_neuron_scores(_score_dict(), kind="scores")
    tensors = _score_dict()
    gate = tensors[f"{PREFIX}.1.mlp.gate_proj.lora_B.weight"].abs()
    up = tensors[f"{PREFIX}.1.mlp.up_proj.lora_B.weight"].abs()
    down = tensors[f"{PREFIX}.1.mlp.down_proj.lora_A.weight"].abs()
    expected = ((gate.sum(1) + up.sum(1) + down.sum(0)) / 6).double().numpy()
    np.testing.assert_allclose(scores["mlp"][1], expected)
    assert ignored == 3
    with pytest.raises(OverlapError, match="float score tensor"):
        adapter_neuron_scores(_mask_dict(), kind="scores")


def test_score_files_are_dense_methods_selecting_top_dense_k(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "snip_scores.safetensors"
    save_file({k: v.contiguous() for k, v in _score_dict().items()}, str(path))
    masks = save_masks(_mask_dict(), tmp_path / "snip_masks.safetensors", {})
    section = overlap_section({"scores": str(path), "masks": str(masks)}, OverlapConfig(dense_k=2))
    by_name = {m["name"]: m for m in section["methods"]}
    assert by_name["scores"]["kind"] == "scores" and by_name["masks"]["kind"] == "masks"
    assert by_name["scores"]["modules"]["mlp"]["dense"] and by_name["scores"]["modules"]["mlp"]["selected"] == 2
    mixed = {**_score_dict(), "extra.lora_A.weight": torch.ones(2, 2, dtype=torch.bool)}
    save_file({k: v.contiguous() for k, v in mixed.items()}, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(OverlapError, match="all-bool masks or all-float scores"):
        overlap_section({"x": str(tmp_path / "mixed.safetensors"), "m": str(masks)})
