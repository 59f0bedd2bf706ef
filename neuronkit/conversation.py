"""One tokenisation of a (prompt, answer) conversation and one right-padding collate, shared by SN-Tune, the NLSR
calibration batches and perplexity, so losses and scores from different stages are computed on the same tokens
(docs/methods.md D6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

IGNORE = -100  # label of a token that carries no loss (prompt, padding)


@dataclass
class Example:
    """One tokenised document; ``labels`` is IGNORE where no loss is taken."""

    input_ids: list[int]
    labels: list[int]

    def scored_tokens(self) -> int:
        """Tokens that carry loss (next-token targets, so the first position never does)."""
        return sum(1 for t in self.labels[1:] if t != IGNORE)


def answer_text(tok, prompt: str, answer: str, *, end_turn: bool = True) -> str:
    """The assistant turn as the chat format writes it after ``chat_prompt`` (with its end-of-turn marks when
    ``end_turn``; a generated, possibly cut-off answer is scored without them)."""
    from .models import chat_prompt

    if not end_turn:
        return answer
    if tok.chat_template is None:
        return f" {answer}{tok.eos_token or ''}"
    head = chat_prompt(tok, prompt)
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                   tokenize=False)
    if not full.startswith(head):
        raise ValueError("the chat template renders the prompt differently once an answer is appended; "
                         "prompt and answer tokens cannot be separated")
    return full[len(head):]


def conversation_tokens(tok, prompt: str, answer: str, *, end_turn: bool = True,
                        max_length: int | None = None) -> Example:
    """Tokens of the chat prompt then the answer; loss labels on the answer's tokens only."""
    from .models import chat_prompt

    return context_tokens(tok, chat_prompt(tok, prompt), answer_text(tok, prompt, answer, end_turn=end_turn),
                          max_length=max_length)


def context_tokens(tok, context: str, text: str, *, max_length: int | None = None) -> Example:
    """Tokens of ``context`` (unscored) then ``text`` (scored); each tokenised alone, so the split is exact."""
    c = tok(context, add_special_tokens=False)["input_ids"] if context else []
    t = tok(text, add_special_tokens=False)["input_ids"] if text else []
    ids, labels = c + t, [IGNORE] * len(c) + t
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Example(ids, labels)


def pad_right(examples: Sequence[Example], pad_id: int, device=None) -> dict:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` tensors; padding is masked from attention and loss."""
    import torch

    width = max(1, max(len(e.input_ids) for e in examples))
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        if n:
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch
