"""Perplexity: of held-out text under a (changed) model, and of each answer after its prompt (the judge's breakage
signal)."""

from __future__ import annotations

import math
from typing import Sequence


def perplexity(model, tok, texts: Sequence[str], prompts: Sequence[str] | None = None, batch_size: int = 8) -> dict:
    """Token-level perplexity of ``texts`` (optionally as answers to ``prompts`` in the chat format, whose tokens
    are not scored)."""
    rows = token_nlls(model, tok, texts, prompts, batch_size)
    total_nll, total_tokens = sum(r[0] for r in rows), sum(r[1] for r in rows)
    return {"perplexity": round(math.exp(total_nll / max(total_tokens, 1)), 4), "tokens": total_tokens,
            "texts": len(texts)}


def perplexity_texts(table) -> tuple[list[str], list[str] | None, str]:
    """(texts, prompts, what is scored) of a held-out benign table: its answers to their prompts (chat format) when
    every row has one, else the prompt text."""
    responses = table.column("response").to_pylist() if "response" in table.column_names else []
    if responses and all(responses):
        return responses, table.column("prompt").to_pylist(), "response given the prompt"
    return table.column("prompt").to_pylist(), None, "prompt text"


def variant_perplexity_file(ckpt_dir, text_parquet, out_json, *, variant: str, dataset: str) -> dict:
    """Perplexity of held-out benign text under one checkpoint variant (does the changed model still work?)."""
    from .data import read_table
    from .models import load_variant
    from .atomic import write_json

    texts, prompts, scored = perplexity_texts(read_table(text_parquet))
    model, tok = load_variant(ckpt_dir)
    out = {"variant": variant, "dataset": dataset, "text": scored, **perplexity(model, tok, texts, prompts)}
    write_json(out, out_json)
    return out


def answer_perplexities(model, tok, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8) -> list[float]:
    """Per answer: its perplexity after the prompt in the model's chat format (NaN for an empty answer)."""
    rows = token_nlls(model, tok, answers, prompts, batch_size)
    return [math.exp(nll / n) if n else float("nan") for nll, n in rows]


def token_nlls(model, tok, texts: Sequence[str], prompts: Sequence[str] | None = None,
               batch_size: int = 8) -> list[tuple[float, int]]:
    """Per text: the summed negative log-likelihood of its tokens (as the answer to its prompt, when given), and how
    many were scored. Answers are scored without end-of-turn marks: a generated answer may be cut off."""
    from .conversation import context_tokens, conversation_tokens

    if prompts is None:
        examples = [context_tokens(tok, "", t) for t in texts]
    else:
        examples = [conversation_tokens(tok, p, t, end_turn=False) for p, t in zip(prompts, texts, strict=True)]
    return example_nlls(model, examples, tok.pad_token_id, batch_size)


def example_nlls(model, examples, pad_id: int, batch_size: int = 8) -> list[tuple[float, int]]:
    """Per tokenised example: summed next-token NLL over its labelled tokens, and their count.

    The model projects onto the vocabulary only the positions that predict a labelled token (``logits_to_keep`` as a
    boolean mask, transformers' public forward argument): prompt and padding positions cost no ``lm_head`` and no
    softmax over the vocabulary."""
    import torch

    from .conversation import IGNORE, pad_right

    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        batch = pad_right(examples[start:start + batch_size], pad_id, device)
        target = batch["labels"][:, 1:]
        valid = target != IGNORE
        keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
        keep[:, :-1] = valid
        sums = torch.zeros(len(target), dtype=torch.float32, device=device)
        if valid.any():
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits.reshape(-1, logits.shape[-1]), -1)
            nll = -logp.gather(-1, target[valid].unsqueeze(-1)).squeeze(-1)
            sums.index_add_(0, valid.nonzero()[:, 0], nll)
        counts = valid.sum(1)
        out += [(float(sums[i]), int(counts[i])) for i in range(len(target))]
    return out
