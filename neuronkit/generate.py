"""Batched generation for any variant on any prepared dataset, with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .models import chat_prompt


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; greedy by default, as in the papers' evaluations."""

    max_new_tokens: int = 64
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"generate.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"generate.batch_size must be >= 1, got {self.batch_size}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError("generate.temperature must be > 0 when do_sample is true")

    def hf_kwargs(self) -> dict:
        """Keyword arguments for ``model.generate``."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


@torch.no_grad()
def generate_responses(model, tok, prompts: Sequence[str], cfg: GenerationConfig, desc: str = "generate") -> list[str]:
    """Answer every prompt in the model's chat format; returns responses in input order."""
    texts = [chat_prompt(tok, p, cfg.system_prompt) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))  # similar lengths batch together
    out: list[str | None] = [None] * len(texts)
    tok.padding_side = "left"
    device = next(model.parameters()).device
    generator_seed = torch.Generator().manual_seed(cfg.seed)
    with tqdm(total=len(texts), desc=desc, unit="prompt") as bar:
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            if cfg.do_sample:
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
            ids = model.generate(**enc, **cfg.hf_kwargs(), pad_token_id=tok.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new):
                out[i] = tok.decode(row, skip_special_tokens=True).strip()
            bar.update(len(idx))
    return [o or "" for o in out]


@torch.no_grad()
def greedy_steps(model, tok, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy answers of one batch as token ids (each cut after its first end token) and the scores that chose
    every token, ``[steps, rows, vocab]``: what two runs need to tell a real difference from a floating-point tie."""
    texts = [chat_prompt(tok, p) for p in prompts]
    tok.padding_side = "left"
    device = next(model.parameters()).device
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=max(1, len(texts)))
    out = model.generate(**enc, **cfg.hf_kwargs(), pad_token_id=tok.pad_token_id, output_scores=True,
                         return_dict_in_generate=True)
    ends = model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, (list, tuple)) else [ends]) - {None}
    ids = []
    for row in out.sequences[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
        ids.append(row[:cut])
    return ids, torch.stack(out.scores).float().cpu()


def generate_file(ckpt_dir, prompts_parquet, out_parquet, cfg: GenerationConfig, *, variant: str,
                  intervention: str = "none") -> None:
    """Generations artifact: ``id, prompt, response, variant, intervention`` (+ label, category)."""
    from .data import read_table
    from .models import load_variant

    table = read_table(prompts_parquet)
    model, tok = load_variant(ckpt_dir)
    responses = generate_responses(model, tok, table.column("prompt").to_pylist(), cfg, desc=f"generate {variant}")
    write_generations(table, responses, out_parquet, variant=variant, intervention=intervention)


def write_generations(table, responses: Sequence[str], out_parquet, *, variant: str, intervention: str) -> None:
    """The generations schema, shared by plain and patched generation."""
    import pyarrow as pa

    from .data import write_table

    n = table.num_rows
    out = pa.table({
        "id": table.column("id"), "prompt": table.column("prompt"), "response": pa.array(list(responses), pa.string()),
        "variant": pa.array([variant] * n, pa.string()), "intervention": pa.array([intervention] * n, pa.string()),
        "label": table.column("label"), "category": table.column("category"),
    })
    write_table(out, out_parquet)
