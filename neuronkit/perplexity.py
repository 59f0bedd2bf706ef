"""Perplexity: of held-out text under a (changed) model, and of each answer after its prompt (the judge's breakage
signal)."""

from __future__ import annotations

import math
from typing import Sequence


def perplexity(model, tok, texts: Sequence[str], contexts: Sequence[str] | None = None, batch_size: int = 8) -> dict:
    """Token-level perplexity of ``texts`` (optionally after a context whose tokens are not scored)."""
    rows = token_nlls(model, tok, texts, contexts, batch_size)
    total_nll, total_tokens = sum(r[0] for r in rows), sum(r[1] for r in rows)
    return {"perplexity": round(math.exp(total_nll / max(total_tokens, 1)), 4), "tokens": total_tokens,
            "texts": len(texts)}


def perplexity_texts(table) -> tuple[list[str], list[str] | None, str]:
    """(texts, contexts, what is scored) of a held-out benign table: its answers after their prompts when every row
    has one, else the prompt text."""
    responses = table.column("response").to_pylist() if "response" in table.column_names else []
    if responses and all(responses):
        return responses, table.column("prompt").to_pylist(), "response given the prompt"
    return table.column("prompt").to_pylist(), None, "prompt text"


def variant_perplexity_file(ckpt_dir, text_parquet, out_json, *, variant: str, dataset: str) -> dict:
    """Perplexity of held-out benign text under one checkpoint variant (does the changed model still work?)."""
    from .data import read_table
    from .models import load_variant
    from .atomic import write_json

    texts, contexts, scored = perplexity_texts(read_table(text_parquet))
    model, tok = load_variant(ckpt_dir)
    out = {"variant": variant, "dataset": dataset, "text": scored, **perplexity(model, tok, texts, contexts)}
    write_json(out, out_json)
    return out


def answer_perplexities(model, tok, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8) -> list[float]:
    """Per answer: its perplexity after the prompt in the model's chat format (NaN for an empty answer)."""
    from .models import chat_prompt

    rows = token_nlls(model, tok, answers, [chat_prompt(tok, p) for p in prompts], batch_size)
    return [math.exp(nll / n) if n else float("nan") for nll, n in rows]


def token_nlls(model, tok, texts: Sequence[str], contexts: Sequence[str] | None = None,
               batch_size: int = 8) -> list[tuple[float, int]]:
    """Per text: the summed negative log-likelihood of its tokens after its context, and how many were scored."""
    import torch

    device = next(model.parameters()).device
    contexts = contexts or [""] * len(texts)
    out: list[tuple[float, int]] = []
    for start in range(0, len(texts), batch_size):
        rows = []
        for ctx, text in zip(contexts[start:start + batch_size], texts[start:start + batch_size]):
            c = tok(ctx, add_special_tokens=False)["input_ids"] if ctx else []
            t = tok(text, add_special_tokens=False)["input_ids"] if text else []
            rows.append((c + t, len(c)))
        width = max(1, max(len(ids) for ids, _ in rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (row, n_ctx) in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            attn[i, :len(row)] = 1
            labels[i, max(n_ctx, 1):len(row)] = ids[i, max(n_ctx, 1):len(row)]
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        target = labels[:, 1:].to(device)
        valid = target != -100
        nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
        out += [(float(nll[i].sum()), int(valid[i].sum())) for i in range(len(rows))]
    return out
