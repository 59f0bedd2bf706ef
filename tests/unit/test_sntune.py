"""SN-Tune: only the safety neurons' rows/columns move, checkpoints reload exactly, state is sparse."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from neuronkit import manifest
from neuronkit.archs import attn_module, mlp_module, model_shape
from neuronkit.builtin_data import harmful_requests
from neuronkit.hooks import count_hooks
from neuronkit.models import load_variant
from neuronkit.neurons import NeuronIndex, NeuronIndexError
from neuronkit.conversation import IGNORE, pad_right
from neuronkit.sntune import (NeuronDeltas, SNTuneConfig, build_examples, linear_of, massive_mlp_neurons,
                              optimizer_state_bytes, pick_benign_documents, pick_documents, plan_targets,
                              save_checkpoint, select_neurons, sn_tune, sntune_stage, token_loss_sum, train_deltas,
                              training_documents, tune_model)

FAST = dict(batch_size=2, grad_accum=2, max_length=96, n_docs=6, warmup_ratio=0.0)


@pytest.fixture(scope="module")
def harmful() -> pa.Table:
    rows = harmful_requests("train")[:16]
    return pa.table({k: [r[k] for r in rows] for k in ("id", "prompt", "category")})


@pytest.fixture
def tiny(tiny_base):
    return load_variant(tiny_base, device=torch.device("cpu"))


def _index(model, seed: int = 1, modules=("mlp", "q", "k", "v", "o")) -> NeuronIndex:
    """A full random ranking over every site of the model (distinct scores)."""
    shape = model_shape(model.config)
    gen = torch.Generator().manual_seed(seed)
    scores = {m: torch.rand(shape["num_layers"], shape["sites"][m], generator=gen) for m in modules}
    return NeuronIndex.from_scores(scores, {"method": "test", "shape": shape})


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _trained_mask(model, targets) -> dict[str, torch.Tensor]:
    """Per weight name, True where SN-Tune may write."""
    names = {id(p): n for n, p in model.named_parameters()}
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    for t in targets:
        name = names[id(linear_of(model, t.layer, t.matrix).weight)]
        if t.axis == 0:
            masks[name][t.ids] = True
        else:
            masks[name][:, t.ids] = True
    return masks


# ----------------------------------------------------------------------------- config


def test_from_config_names_bad_keys_and_values():
    cfg = SNTuneConfig.from_config({"learning_rate": 1, "modules": ["mlp", "q"], "max_per_matrix": None})
    assert cfg.learning_rate == 1.0 and cfg.modules == ("mlp", "q") and cfg.effective_batch == 32
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\]"):
        SNTuneConfig.from_config({"lr": 1e-6})
    with pytest.raises(ValueError, match="sntune.learning_rate: expected float.*'1e-6' \\(str\\)"):
        SNTuneConfig.from_config({"learning_rate": "1e-6"})
    with pytest.raises(ValueError, match="sntune.max_per_matrix must be >= 1"):
        SNTuneConfig.from_config({"max_per_matrix": 0})
    with pytest.raises(ValueError, match="sntune.format"):
        SNTuneConfig.from_config({"format": "alpaca"})
    with pytest.raises(ValueError, match="sntune.modules"):
        SNTuneConfig.from_config({"modules": ["mlp", "ffn"]})
    with pytest.raises(ValueError, match="sntune.warmup_ratio must be < 1"):
        SNTuneConfig(warmup_ratio=1.0)


def test_defaults_are_the_papers():
    cfg = SNTuneConfig()
    assert (cfg.learning_rate, cfg.epochs, cfg.effective_batch, cfg.warmup_ratio, cfg.max_grad_norm,
            cfg.max_length, cfg.max_per_matrix, cfg.n_docs, cfg.tune_gate) == (1e-6, 1, 32, 0.05, 0.3, 512, 100, 50,
                                                                             False)


# ----------------------------------------------------------------------------- selection


def test_cap_keeps_the_top_importance_neurons_per_layer_and_module(tiny):
    model, _ = tiny
    index = _index(model)
    picked = select_neurons(index, ("mlp", "q", "k", "v", "o"), max_per_matrix=5)
    for module in ("mlp", "q", "k", "v", "o"):
        for layer in range(model.config.num_hidden_layers):
            sel = (index.module == module) & (index.layer == layer)
            best = set(index.neuron[sel][np.argsort(-index.score[sel])][:5].tolist())
            got = (picked.module == module) & (picked.layer == layer)
            assert set(picked.neuron[got].tolist()) == best
    assert np.all(np.diff(picked.score) <= 0)  # still in rank order
    assert set(select_neurons(index, ("mlp",), None).module.tolist()) == {"mlp"}


def test_cap_follows_rank_order_not_neuron_ids(tiny):
    model, _ = tiny
    index = NeuronIndex([0, 0, 0, 0], ["mlp"] * 4, [9, 3, 50, 1], [4.0, 3.0, 2.0, 1.0],
                        {"shape": model_shape(model.config)})
    assert select_neurons(index, ("mlp",), 2).neuron.tolist() == [9, 3]


def test_neurons_own_up_rows_down_columns_and_attention_rows(tiny):
    model, _ = tiny
    index = NeuronIndex([0, 1, 1, 0], ["mlp", "q", "mlp", "o"], [7, 2, 4, 3], [4, 3, 2, 1],
                        {"shape": model_shape(model.config)})
    plan = {(t.layer, t.matrix): (t.axis, t.ids.tolist()) for t in plan_targets(index)}
    assert plan == {(0, "up"): (0, [7]), (0, "down"): (1, [7]), (1, "up"): (0, [4]), (1, "down"): (1, [4]),
                    (1, "q"): (0, [2]), (0, "o"): (1, [3])}
    assert {t.matrix for t in plan_targets(index, tune_gate=True)} >= {"gate"}
    assert linear_of(model, 1, "down") is mlp_module(model, 1, "down")
    assert linear_of(model, 0, "k") is attn_module(model, 0, "k")


# ----------------------------------------------------------------------------- deltas


def test_hooked_deltas_equal_folded_weights_and_hooks_go_away(tiny):
    model, _ = tiny
    targets = plan_targets(select_neurons(_index(model), ("mlp", "q", "k", "v", "o"), 3), tune_gate=True)
    deltas = NeuronDeltas(model, targets)
    with torch.no_grad():
        for d in deltas.deltas:
            d.normal_(0, 0.5)
    ids = torch.tensor([[5, 17, 33, 99, 120, 7]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with deltas.attached():
            assert count_hooks(model) == len(targets)
            hooked = model(input_ids=ids).logits
        assert count_hooks(model) == 0
        deltas.fold()
        folded = model(input_ids=ids).logits
    assert not torch.allclose(hooked, plain, atol=1e-3)
    torch.testing.assert_close(folded, hooked, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError), deltas.attached():
        raise RuntimeError("boom")
    assert count_hooks(model) == 0


def test_delta_grads_are_the_masked_weight_grads_and_clipping_sees_only_them(tiny, harmful):
    model, tok = tiny
    cfg = SNTuneConfig(**{**FAST, "n_docs": 4, "learning_rate": 1e-3})
    targets = plan_targets(select_neurons(_index(model), cfg.modules, 4))
    q, r = pick_documents(harmful, cfg.n_docs, cfg.seed)
    examples = build_examples(tok, q, r, cfg.format, cfg.max_length)
    batch = pad_right(examples, tok.pad_token_id)
    n_tokens = int((batch["labels"][:, 1:] != IGNORE).sum())

    model.zero_grad()
    (token_loss_sum(model, batch) / n_tokens).backward()  # dense gradients of every weight
    dense = {n: p.grad.clone() for n, p in model.named_parameters()}
    masks = _trained_mask(model, targets)
    masked_norm = torch.linalg.vector_norm(torch.stack([dense[n][m].norm() for n, m in masks.items()]))
    full_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in dense.values()]))
    model.zero_grad()

    deltas = NeuronDeltas(model, targets)
    result = train_deltas(model, deltas, examples, cfg, pad_id=tok.pad_token_id, progress=False)
    assert result.steps == 1  # one effective batch of 4 = 2 micro-batches
    assert result.grad_norms[0] == pytest.approx(float(masked_norm), rel=1e-4)
    assert float(masked_norm) < 0.5 * float(full_norm)
    assert all(p.grad is None for p in model.parameters())  # frozen weights got no gradient at all


def test_delta_gradient_matches_each_masked_slice(tiny, harmful):
    model, tok = tiny
    targets = plan_targets(select_neurons(_index(model), ("mlp", "q", "k", "v", "o"), 2))
    q, r = pick_documents(harmful, 2, 0)
    batch = pad_right(build_examples(tok, q, r, "chat", 96), tok.pad_token_id)
    token_loss_sum(model, batch).backward()
    dense = {id(p): p.grad.clone() for p in model.parameters()}
    model.zero_grad()
    for p in model.parameters():
        p.requires_grad_(False)
    deltas = NeuronDeltas(model, targets)
    with deltas.attached():
        token_loss_sum(model, batch).backward()
    for t, d in zip(deltas.targets, deltas.deltas):
        g = dense[id(linear_of(model, t.layer, t.matrix).weight)]
        want = g[t.ids] if t.axis == 0 else g[:, t.ids]
        torch.testing.assert_close(d.grad, want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- training


def test_only_selected_slices_change_and_checkpoint_reloads_exactly(tmp_path, tiny, harmful):
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    before = _snapshot(model)
    index = _index(model)
    cfg = SNTuneConfig(**{**FAST, "learning_rate": 5e-2, "weight_decay": 0.5, "max_per_matrix": 3})
    summary = tune_model(model, tok, index, harmful, cfg, progress=False)
    targets = plan_targets(select_neurons(index, cfg.modules, 3))
    masks = _trained_mask(model, targets)
    after = _snapshot(model)
    for name, mask in masks.items():
        assert torch.equal(after[name][~mask], before[name][~mask]), f"frozen entries of {name} moved"
        if mask.any():
            changed = after[name] != before[name]
            assert changed[mask].float().mean() > 0.9, f"trained slice of {name} barely moved"
    assert summary["trained_entries"] == sum(int(m.sum()) for m in masks.values())
    assert summary["trained_rows"] == {"up": [3, 3], "down": [3, 3], "q": [3, 3], "k": [3, 3], "v": [3, 3]}

    out = save_checkpoint(model, tok, tmp_path / "sn", manifest.Variant("sntune", "tiny", "full", method="sntune"))
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    reloaded, _ = load_variant(out, device=torch.device("cpu"))
    plain = AutoModelForCausalLM.from_pretrained(out)
    for other in (reloaded, plain):
        got = other.state_dict()
        assert all(torch.equal(got[k], v) for k, v in after.items())


def _with_massive_neuron(model, layer: int = 0, neuron: int = 7, scale: float = 1e3):
    """Make one MLP neuron a massive activation: its up row scaled, so |h| grows by ``scale`` on every token."""
    with torch.no_grad():
        mlp_module(model, layer, "up").weight[neuron] *= scale


def test_a_massive_neurons_down_column_stays_frozen_while_its_up_row_trains(tiny, harmful):
    model, tok = tiny
    _with_massive_neuron(model)
    index = NeuronIndex([0, 0, 1], ["mlp"] * 3, [7, 4, 7], [3.0, 2.0, 1.0], {"shape": model_shape(model.config)})
    q, r = pick_documents(harmful, 4, 0)
    examples = build_examples(tok, q, r, "chat", 64)
    assert massive_mlp_neurons(model, examples, index, 100.0, pad_id=tok.pad_token_id) == {0: [7]}
    assert massive_mlp_neurons(model, examples, index, 1e7, pad_id=tok.pad_token_id) == {}
    plan = {(t.layer, t.matrix): t.ids.tolist() for t in plan_targets(index, frozen_down={0: [7]})}
    assert plan == {(0, "up"): [4, 7], (0, "down"): [4], (1, "up"): [7], (1, "down"): [7]}

    before = _snapshot(model)
    cfg = SNTuneConfig(**{**FAST, "modules": ("mlp",), "learning_rate": 5e-2, "massive_down_ratio": 100.0})
    summary = tune_model(model, tok, index, harmful, cfg, progress=False)
    after = _snapshot(model)
    down, up = "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(after[down][:, 7], before[down][:, 7])       # the massive neuron's column: frozen
    assert not torch.equal(after[down][:, 4], before[down][:, 4])   # an ordinary neuron's column: trained
    assert not torch.equal(after[up][7], before[up][7])             # the massive neuron's up row: trained
    assert summary["n_massive_down_frozen"] == 1 and summary["massive_down_frozen"] == {"0": [7]}
    assert summary["trained_rows"]["down"] == [1, 1] and summary["trained_rows"]["up"] == [2, 1]


def test_without_the_ratio_every_down_column_trains(tiny, harmful):
    model, tok = tiny
    _with_massive_neuron(model)
    index = NeuronIndex([0, 0], ["mlp"] * 2, [7, 4], [3.0, 2.0], {"shape": model_shape(model.config)})
    cfg = SNTuneConfig(**{**FAST, "modules": ("mlp",), "learning_rate": 5e-2})
    summary = tune_model(model, tok, index, harmful, cfg, progress=False)
    assert summary["n_massive_down_frozen"] == 0 and summary["trained_rows"]["down"] == [2, 0]
    with pytest.raises(ValueError, match="sntune.massive_down_ratio"):
        SNTuneConfig(massive_down_ratio=0.0)


def test_optimizer_state_is_proportional_to_trained_rows(tiny, harmful):
    model, tok = tiny
    q, r = pick_documents(harmful, 2, 0)
    examples = build_examples(tok, q, r, "chat", 64)
    sizes = {}
    for cap in (2, 4):
        cfg = SNTuneConfig(**{**FAST, "n_docs": 2, "max_per_matrix": cap, "learning_rate": 1e-3})
        deltas = NeuronDeltas(model, plan_targets(select_neurons(_index(model), cfg.modules, cap)))
        result = train_deltas(model, deltas, examples, cfg, pad_id=tok.pad_token_id, progress=False)
        opt = result.optimizer
        assert not any(p in opt.state for p in model.parameters())
        assert {id(p) for p in opt.state} == {id(d) for d in deltas.deltas}
        sizes[cap] = (optimizer_state_bytes(opt), deltas.num_entries, len(deltas.deltas))
    (b2, e2, n2), (b4, e4, n4) = sizes[2], sizes[4]
    assert e4 == 2 * e2 and n4 == n2
    assert b4 - b2 == 2 * 4 * (e4 - e2)  # two fp32 moments per trained entry, nothing else grows
    assert b2 - 2 * 4 * e2 <= 8 * n2    # the rest is one step counter per delta tensor


def test_same_seed_same_checkpoint_and_manifest(tmp_path, tiny_base, harmful):
    model, _ = load_variant(tiny_base)
    index = _index(model)
    cfg = SNTuneConfig(**{**FAST, "learning_rate": 1e-2, "max_per_matrix": 4})
    a = sn_tune(tiny_base, tmp_path / "a", index, harmful, cfg, model_name="tiny", progress=False)
    b = sn_tune(tiny_base, tmp_path / "b", index, harmful, cfg, model_name="tiny", progress=False)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a["losses"] == b["losses"] and a["steps"] == 2  # 6 docs / effective batch 4
    var = manifest.read(tmp_path / "a")
    assert var.kind == "full" and var.method == "sntune" and var.params["trained_entries"] == a["trained_entries"]
    assert (tmp_path / "a" / "variant.json").read_text() == (tmp_path / "b" / "variant.json").read_text()
    assert "seconds_per_step" not in json.loads((tmp_path / "a" / "variant.json").read_text())["params"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_rsn_tune_removes_foundation_neurons_before_the_cap(tiny, harmful):
    model, tok = tiny
    index = _index(model, modules=("mlp",))
    foundation = index.top(10)
    cfg = SNTuneConfig(**{**FAST, "n_docs": 2, "modules": ("mlp",), "max_per_matrix": 4})
    summary = tune_model(model, tok, index, harmful, cfg, foundation=foundation, progress=False)
    assert summary["method"] == "rsntune" and summary["neurons"] == {"mlp": [4, 4]}
    expected = select_neurons(index.difference(foundation), ("mlp",), 4)
    assert not set(expected.keys()) & set(foundation.keys())


def test_stage_reads_files_and_hashes_its_inputs(tmp_path, tiny, tiny_base, harmful):
    from neuronkit.data import write_table

    model, _ = tiny
    index = _index(model)
    index.write(tmp_path / "plnd.parquet")
    index.top(20).write(tmp_path / "foundation.parquet")
    write_table(harmful, tmp_path / "harmful.parquet")
    cfg = SNTuneConfig.from_config({**FAST, "n_docs": 2, "max_per_matrix": 2})
    summary = sntune_stage(tiny_base, tmp_path / "plnd.parquet", tmp_path / "harmful.parquet", tmp_path / "rsn", cfg,
                           model_name="tiny", foundation_path=tmp_path / "foundation.parquet")
    var = manifest.read(tmp_path / "rsn")
    assert var.method == summary["method"] == "rsntune"
    assert set(var.inputs) == {"neurons", "harmful", "parent", "foundation"}
    reloaded, _ = load_variant(tmp_path / "rsn")
    assert reloaded.config.num_hidden_layers == model.config.num_hidden_layers


# ----------------------------------------------------------------------------- data and errors


def test_chat_documents_put_the_loss_on_the_refusal_only(tiny, harmful):
    _, tok = tiny
    q, r = pick_documents(harmful, 3, 0)
    assert q == pick_documents(harmful, 3, 0)[0] and len(set(q)) == 3
    (ex,) = build_examples(tok, q[:1], r[:1], "chat", 512)
    answer = [t for t in ex.labels if t != IGNORE]
    n_prompt = ex.labels.index(answer[0])
    assert tok.decode(ex.input_ids[:n_prompt]).endswith("<|im_start|>assistant\n")
    assert tok.decode(answer) == r[0] + "<|im_end|>\n"
    (plain,) = build_examples(tok, ["How do I do it?"], ["No."], "plain", 512)
    assert plain.labels == plain.input_ids and tok.decode(plain.input_ids) == "How do I do it? No."
    (short,) = build_examples(tok, ["do it"], ["No."], "plain", 4)
    assert tok.decode(short.input_ids) == "do i"


@pytest.fixture(scope="module")
def benign_answers() -> pa.Table:
    prompts = [f"Name a colour, number {i}." for i in range(6)]
    return pa.table({"id": [f"b{i}" for i in range(6)], "prompt": prompts,
                     "response": [f"Colour {i} is blue." for i in range(6)]})


def test_benign_documents_are_mixed_in_with_their_own_answers(tiny, harmful, benign_answers):
    _, tok = tiny
    cfg = SNTuneConfig(**{**FAST, "n_docs": 3, "benign_docs": 2})
    questions, answers, n_benign = training_documents(harmful, benign_answers, cfg)
    assert n_benign == 2
    assert questions[:3] == pick_documents(harmful, 3, cfg.seed)[0]
    assert len(questions) == 5 and all(q.startswith("Name a colour") for q in questions[3:])
    assert answers[3:] == [f"Colour {q.split()[-1][:-1]} is blue." for q in questions[3:]]
    assert training_documents(harmful, benign_answers, cfg) == (questions, answers, 2)  # seeded
    examples = build_examples(tok, questions, answers, "chat", 96)
    assert tok.decode([t for t in examples[-1].labels if t != IGNORE]).startswith(answers[-1])
    assert training_documents(harmful, None, SNTuneConfig(**{**FAST, "n_docs": 3}))[::2] == (questions[:3], 0)


def test_benign_mixing_reaches_training_and_the_manifest(tmp_path, tiny, tiny_base, harmful, benign_answers):
    from neuronkit.data import write_table

    model, _ = tiny
    _index(model).write(tmp_path / "plnd.parquet")
    write_table(harmful, tmp_path / "harmful.parquet")
    write_table(benign_answers, tmp_path / "benign.parquet")
    cfg = SNTuneConfig.from_config({**FAST, "n_docs": 2, "benign_docs": 2, "max_per_matrix": 2})
    summary = sntune_stage(tiny_base, tmp_path / "plnd.parquet", tmp_path / "harmful.parquet", tmp_path / "sn", cfg,
                           model_name="tiny", benign_answers_parquet=tmp_path / "benign.parquet")
    assert summary["n_docs"] == 4 and summary["n_benign_docs"] == 2 and summary["steps"] == 1
    assert set(manifest.read(tmp_path / "sn").inputs) == {"neurons", "harmful", "parent", "benign_answers"}


def test_bad_benign_answers_are_named(tiny, harmful, benign_answers):
    cfg = SNTuneConfig(**{**FAST, "benign_docs": 2})
    with pytest.raises(ValueError, match="needs a benign answer table"):
        training_documents(harmful, None, cfg)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['response'\]"):
        pick_benign_documents(benign_answers.drop(["response"]), 2, 0)
    blank = benign_answers.set_column(2, "response", pa.array([""] * 6))
    with pytest.raises(ValueError, match="row 'b.' has an empty response"):
        pick_benign_documents(blank, 2, 0)
    with pytest.raises(ValueError, match="benign_docs must be"):
        SNTuneConfig(**{**FAST, "benign_docs": -1})


def test_bad_inputs_fail_before_training(tmp_path, tiny, tiny_base, harmful):
    model, tok = tiny
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['category'\]"):
        sn_tune(tiny_base, tmp_path / "x", _index(model), harmful.drop(["category"]), SNTuneConfig(**FAST),
                model_name="tiny")
    other = NeuronIndex([0], ["mlp"], [0], [1.0], {"shape": {"num_layers": 30, "sites": {"mlp": 1536}}})
    with pytest.raises(NeuronIndexError, match="30 layers"):
        tune_model(model, tok, other, harmful, SNTuneConfig(**FAST), progress=False)
    with pytest.raises(ValueError, match="no neurons of modules"):
        tune_model(model, tok, _index(model, modules=("o",)), harmful, SNTuneConfig(**FAST), progress=False)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- Trainer: resume

RESUMABLE = dict(FAST, n_docs=8, batch_size=2, grad_accum=1, epochs=2, learning_rate=1e-2, checkpoint_steps=1,
                 max_length=512, max_per_matrix=3)
KILLED_RUN = """
import os, signal, sys
import pyarrow.parquet as pq
from transformers import TrainerCallback
from neuronkit.neurons import NeuronIndex
from neuronkit.sntune import SNTuneConfig, sn_tune

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: what a preempted job gets

cfg = SNTuneConfig.from_config({cfg!r})
sn_tune(sys.argv[1], sys.argv[2], NeuronIndex.read(sys.argv[3] + "/index.parquet"),
        pq.read_table(sys.argv[3] + "/harmful.parquet"), cfg, model_name="tiny", progress=False,
        callbacks=[KillAfterSave()])
"""


def test_a_killed_run_resumes_to_the_same_weights_and_manifest(tmp_path, tiny_base, harmful):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from neuronkit.sntune import resume_dir

    model, _ = load_variant(tiny_base)
    index = _index(model)
    index.write(tmp_path / "index.parquet")
    pq.write_table(harmful, tmp_path / "harmful.parquet")
    cfg = SNTuneConfig.from_config(RESUMABLE)
    whole = sn_tune(tiny_base, tmp_path / "whole", index, harmful, cfg, model_name="tiny", progress=False)
    assert whole["steps"] == 8 and whole["resumed_from"] is None  # 8 docs / batch 2, two epochs
    assert not resume_dir(tmp_path / "whole").exists()  # removed once the checkpoint is written

    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.format(cfg=RESUMABLE), str(tiny_base),
                             str(tmp_path / "cut"), str(tmp_path), "3"], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "cut").exists()
    assert (resume_dir(tmp_path / "cut") / "checkpoint-3").is_dir()

    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            CountSteps.steps += 1

    resumed = sn_tune(tiny_base, tmp_path / "cut", index, harmful, cfg, model_name="tiny", progress=False,
                      callbacks=[CountSteps()])
    assert resumed["resumed_from"] == "checkpoint-3" and CountSteps.steps == 5  # only the steps after the cut ran
    assert resumed["losses"] == whole["losses"] and resumed["grad_norms"] == whole["grad_norms"]
    weights = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("cut", "whole")]
    assert weights[0] == weights[1]
    assert (tmp_path / "cut" / "variant.json").read_text() == (tmp_path / "whole" / "variant.json").read_text()
    assert not resume_dir(tmp_path / "cut").exists()


def test_checkpoints_of_another_config_are_not_resumed(tmp_path, tiny_base, harmful):
    from neuronkit.sntune import prepared_resume_dir, resume_dir, run_fingerprint

    model, tok = load_variant(tiny_base)
    index = select_neurons(_index(model), ("mlp", "q", "k", "v"), 3)
    q, r = pick_documents(harmful, 4, 0)
    examples = build_examples(tok, q, r, "chat", 96)
    cfg = SNTuneConfig(**RESUMABLE)
    work = prepared_resume_dir(resume_dir(tmp_path / "out"), run_fingerprint(cfg, index, examples, "parent"))
    (work / "checkpoint-2").mkdir()
    again = prepared_resume_dir(work, run_fingerprint(cfg, index, examples, "parent"))
    assert (again / "checkpoint-2").is_dir()  # same run: kept
    for changed in (run_fingerprint(SNTuneConfig(**{**RESUMABLE, "learning_rate": 2e-2}), index, examples, "parent"),
                    run_fingerprint(cfg, index, examples[:3], "parent"),
                    run_fingerprint(cfg, index.top(5), examples, "parent"),
                    run_fingerprint(cfg, index, examples, "another parent")):
        (work / "checkpoint-2").mkdir(exist_ok=True)
        assert not (prepared_resume_dir(work, changed) / "checkpoint-2").exists()
