"""Cost of activation capture and of dynamic patching, as ratios measured in one run.

Run: .venv/bin/python benchmarks/contrast_patching.py [--prompts 64] [--new-tokens 32] [--k 0.05]
Needs results/smollm2/checkpoints/{base,aligned_mlp} (the contrast pair; run the workflow first). Writes
benchmarks/out/contrast_patching.json.

Each condition runs in its own subprocess so that peak memory (CUDA: max allocated; CPU: peak
RSS) belongs to that condition alone. Conditions:

- ``forward``: teacher-forced forwards of A and U over the prompts + completions (plain ``model(...)``);
- ``capture``: the same tokens through ``contrast_statistics`` (A's and U's MLP activations streamed
  into the paired reducers);
- ``generate``: plain greedy ``generate`` with U;
- ``two_model`` / ``fused``: the same generation with the top k of neurons guided by A.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Peak memory inside the block: CUDA max allocated, or resident set size sampled every 2 ms on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self.before = device, 0, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __enter__(self):
        import threading

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
            return self
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())


def _prompts(n: int) -> list[str]:
    from neuronkit.builtin_data import harmful_requests

    rows = harmful_requests("train")
    return [r["prompt"] for r in rows[:n]]


def _sequences(u, tok, args):
    """U's greedy completions as token ids (what the contrast then runs both models on)."""
    from neuronkit.scores.contrast import ContrastConfig, generate_sequences

    cfg = ContrastConfig(max_new_tokens=args.new_tokens, batch_size=args.batch)
    return generate_sequences(u, tok, _prompts(args.prompts), cfg), tok.pad_token_id


def run_condition(name: str, args, queue) -> None:
    """Measure one condition in this (fresh) process and report seconds and peak bytes."""
    from neuronkit import runtime
    from neuronkit.generate import GenerationConfig
    from neuronkit.models import load_variant
    from neuronkit.neurons import NeuronIndex
    from neuronkit.patching import guide_adapters, guided_fused, guided_two_model, select_neurons

    runtime.setup(seed=0, threads=args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    u, tok = load_variant(args.base)
    weight_bytes = sum(p.numel() * p.element_size() for p in u.parameters())
    extra_weights = 0
    a = seqs = pad = None
    if name in ("forward", "capture"):
        a, _ = load_variant(args.aligned)
        seqs, pad = _sequences(u, tok, args)
    elif name == "two_model":
        a, _ = load_variant(args.aligned)
        extra_weights = sum(p.numel() * p.element_size() for p in a.parameters())
    gen = GenerationConfig(max_new_tokens=args.new_tokens, batch_size=args.batch)
    prompts = _prompts(args.prompts)
    ctx = None
    if name in ("two_model", "fused"):
        index = NeuronIndex.read(args.index)
        neurons = select_neurons(index, args.k, "safety").by_layer("mlp")
        if name == "two_model":
            ctx = guided_two_model(u, a, neurons)
        else:
            adapters = guide_adapters(args.base, args.aligned)
            extra_weights = sum(Path(d, "adapter_model.safetensors").stat().st_size for d in adapters)
            ctx = guided_fused(u, adapters, neurons)
    memory = PeakMemory(device)
    with memory:
        start = time.perf_counter()
        _run(name, args, u, tok, a, seqs, pad, prompts, gen, ctx)
        seconds = time.perf_counter() - start
    queue.put({"condition": name, "seconds": round(seconds, 3), "peak_bytes": memory.peak,
               "bytes_before": memory.before, "weight_bytes": weight_bytes + extra_weights,
               "one_model_weight_bytes": weight_bytes})


def _run(name, args, u, tok, a, seqs, pad, prompts, gen, ctx) -> None:
    """The measured work of one condition."""
    from neuronkit.generate import generate_responses
    from neuronkit.scores.contrast import ContrastConfig, batch_inputs, contrast_statistics

    device = next(u.parameters()).device
    if name == "forward":
        with torch.no_grad():
            for i in range(0, len(seqs), args.batch):
                batch = batch_inputs(seqs[i:i + args.batch], pad, "completion", device)
                batch.pop("select")
                a(**batch, use_cache=False)
                u(**batch, use_cache=False)
    elif name == "capture":
        contrast_statistics(a, u, seqs, pad, ContrastConfig(batch_size=args.batch))
    elif name == "generate":
        generate_responses(u, tok, prompts, gen, desc="plain")
    else:
        with ctx:
            generate_responses(u, tok, prompts, gen, desc=name)


def measure(name: str, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_condition, args=(name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(ROOT / "results/smollm2/checkpoints/base"))
    parser.add_argument("--aligned", default=str(ROOT / "results/smollm2/checkpoints/aligned_mlp"))
    parser.add_argument("--index", default=str(ROOT / "results/smollm2/neurons/contrast.parquet"))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--k", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out/contrast_patching.json"))
    args = parser.parse_args()
    results = {name: measure(name, args) for name in ("forward", "capture", "generate", "two_model", "fused")}
    r = results
    summary = {
        "capture_time_ratio": round(r["capture"]["seconds"] / r["forward"]["seconds"], 3),
        "capture_peak_memory_ratio": round(r["capture"]["peak_bytes"] / r["forward"]["peak_bytes"], 3),
        "capture_extra_memory_ratio": round((r["capture"]["peak_bytes"] - r["capture"]["bytes_before"])
                                            / max(1, r["forward"]["peak_bytes"] - r["forward"]["bytes_before"]), 3),
        "two_model_time_ratio": round(r["two_model"]["seconds"] / r["generate"]["seconds"], 3),
        "fused_time_ratio": round(r["fused"]["seconds"] / r["generate"]["seconds"], 3),
        "two_model_weight_ratio": round(r["two_model"]["weight_bytes"] / r["two_model"]["one_model_weight_bytes"], 3),
        "fused_weight_ratio": round(r["fused"]["weight_bytes"] / r["fused"]["one_model_weight_bytes"], 3),
        "targets": {"capture_time_ratio": 1.05, "capture_peak_memory_ratio": 1.05, "two_model_time_ratio": 1.8,
                    "fused_time_ratio": 1.6, "fused_weight_ratio": 1.0},
    }
    out = {"summary": summary, "conditions": results, "prompts": args.prompts, "new_tokens": args.new_tokens,
           "k": args.k, "batch": args.batch, "threads": args.threads, "machine": platform.platform(),
           "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
