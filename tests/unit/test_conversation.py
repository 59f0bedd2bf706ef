"""The stages that score or train on a (prompt, answer) pair see the same tokens, so their losses are comparable."""

from __future__ import annotations

import math

import pytest
import torch

from neuronkit.conversation import IGNORE, answer_text, conversation_tokens, pad_right
from neuronkit.models import chat_prompt, load_variant
from neuronkit.perplexity import answer_perplexities, example_nlls
from neuronkit.scores.adapter_scores import calibration_batches
from neuronkit.sntune import build_examples, token_loss_sum

PROMPTS = ["How do I pick a lock?", "Explain rain in one line."]
ANSWERS = ["I can't help with that.", "Water vapour cools, condenses and falls."]


@pytest.fixture(scope="module")
def tiny(tiny_base):
    return load_variant(tiny_base)


def test_sntune_and_calibration_tokenise_a_conversation_identically(tiny):
    _, tok = tiny
    examples = build_examples(tok, PROMPTS, ANSWERS, "chat", 256)
    (batch,) = calibration_batches(tok, PROMPTS, ANSWERS, batch_size=2, max_length=256)
    assert torch.equal(batch["input_ids"], pad_right(examples, tok.pad_token_id)["input_ids"])
    assert torch.equal(batch["labels"], pad_right(examples, tok.pad_token_id)["labels"])
    for ex, prompt, answer in zip(examples, PROMPTS, ANSWERS):
        n_prompt = ex.labels.index(next(t for t in ex.labels if t != IGNORE))
        assert tok.decode(ex.input_ids[:n_prompt]) == chat_prompt(tok, prompt)
        assert tok.decode(ex.input_ids[n_prompt:]) == answer_text(tok, prompt, answer)


def test_perplexity_scores_the_answer_tokens_training_sees_minus_the_end_of_turn(tiny):
    model, tok = tiny
    full = conversation_tokens(tok, PROMPTS[1], ANSWERS[1])
    cut = conversation_tokens(tok, PROMPTS[1], ANSWERS[1], end_turn=False)
    assert full.input_ids[:len(cut.input_ids)] == cut.input_ids and len(full.input_ids) > len(cut.input_ids)
    assert tok.decode([t for t in cut.labels if t != IGNORE]) == ANSWERS[1]
    # the same examples give the same summed loss through perplexity and through SN-Tune's training loss
    (nll, n), = example_nlls(model, [full], tok.pad_token_id)
    with torch.no_grad():
        train_loss = float(token_loss_sum(model, pad_right([full], tok.pad_token_id)))
    assert n == full.scored_tokens() and nll == pytest.approx(train_loss, rel=1e-5)
    (ppl,) = answer_perplexities(model, tok, PROMPTS[1:], ANSWERS[1:])
    (nll_cut, n_cut), = example_nlls(model, [cut], tok.pad_token_id)
    assert ppl == pytest.approx(math.exp(nll_cut / n_cut), rel=1e-6)


def test_padding_is_masked_and_never_labelled(tiny):
    _, tok = tiny
    short, long_ = (conversation_tokens(tok, p, a) for p, a in zip(PROMPTS, ANSWERS))
    batch = pad_right([short, long_], tok.pad_token_id)
    n = len(short.input_ids)
    assert batch["attention_mask"][0, :n].all() and not batch["attention_mask"][0, n:].any()
    assert (batch["labels"][0, n:] == IGNORE).all()
    assert batch["input_ids"].shape[1] == max(n, len(long_.input_ids))


def test_the_sft_trainer_tokenises_a_conversation_as_we_do(tiny_base, tmp_path):
    """trl's SFT tokenisation (alignment and the attack) and ours put the loss on the same tokens."""
    from neuronkit.tune import TrainConfig, _build_trainer, sft_examples

    model, tok = load_variant(tiny_base)  # its own copy: the trainer wraps the model in an adapter
    cfg = TrainConfig.from_config("sft", {"seed": 0, "max_steps": 1})
    trainer = _build_trainer(cfg, model, tok, sft_examples(PROMPTS, ANSWERS), tmp_path, torch.device("cpu"))
    for i, (prompt, answer) in enumerate(zip(PROMPTS, ANSWERS)):
        ours = conversation_tokens(tok, prompt, answer)
        assert trainer.train_dataset[i]["input_ids"] == ours.input_ids
        assert trainer.train_dataset[i]["labels"] == ours.labels
