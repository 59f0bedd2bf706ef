"""A cost model of `results/llama3/report.json` on one 80 GB GPU, from the llama3 config and the model's shape.

Run: .venv/bin/python benchmarks/llama3_cost.py [--bandwidth-tbs 2.0] [--tflops 312] [--mfu 0.4]
No GPU is needed: this is arithmetic, not a measurement. Per stage it counts the tokens the config asks for (prompts,
new tokens, training rows and epochs, PLND documents, patching grid) and turns them into seconds with two rules:
decoding is bound by reading the weights once per step (bytes / bandwidth, shared by the rows of a batch), and
prefill, teacher forcing and training are bound by compute (2 N FLOPs per token forward, 6 N with backward, at the
given share of peak). PLND's q/k score is counted from its algorithm: for every layer, head and pre-RoPE dim one
causal softmax over T x T, i.e. layers x (heads + kv heads) x head_dim x T^2 elements per document, each read and
written a few times (memory-bound). Writes benchmarks/out/llama3_cost.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Meta-Llama-3-8B-Instruct
SHAPE = {"params": 8.03e9, "layers": 32, "hidden": 4096, "mlp": 14336, "heads": 32, "kv_heads": 8, "head_dim": 128}
BYTES_PER_PARAM = 2  # bf16
# lm-eval's general-ability tasks of the llama3 config at their own defaults: test documents, forward tokens per
# document (every answer choice's request counted, an upper bound: HFLM's logits cache shares one forward between
# the single-token letter choices of MMLU), and new tokens per document (GSM8K generates up to 256, 5-shot prompts).
GENERAL_TASKS = {"mmlu": {"docs": 14042, "forward_tokens": 4 * 110, "new_tokens": 0},
                 "arc_challenge": {"docs": 1172, "forward_tokens": 4 * 60, "new_tokens": 0},
                 "gsm8k": {"docs": 1319, "forward_tokens": 900, "new_tokens": 256}}


# model loads per job of each rule (two-model rules load U and A; the judge loads the base for answer perplexity;
# deactivation_control counted as one, an upper bound: only the magnitude-matched control loads the model)
MODEL_LOADS = {"generate": 1, "self_answers": 1, "variant_perplexity": 1, "judge": 1, "sft": 1, "preference": 1,
               "attack": 1, "contrast": 2, "plnd": 1, "deactivation_control": 1,
               "deactivate_generate": 1, "deactivation_perplexity": 1,
               "patch_generate": 2, "patch_perplexity": 2, "safeguard": 1, "sntune": 1, "safety_masks": 1,
               "neurons_section": 1, "general": 1}


def dry_run_jobs() -> dict[str, int]:
    """Job counts of the llama3 DAG, from a Snakemake dry run (offline: no hub access is needed)."""
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "results/llama3/report.json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    stats = (proc.stdout + proc.stderr).split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bandwidth-tbs", type=float, default=2.0, help="HBM bandwidth, TB/s (A100-80GB: 2.0)")
    ap.add_argument("--tflops", type=float, default=312.0, help="dense bf16 peak, TFLOPS (A100: 312)")
    ap.add_argument("--mfu", type=float, default=0.4, help="share of peak reached by prefill and training")
    ap.add_argument("--prompt-tokens", type=int, default=60, help="mean prompt length with the chat template")
    ap.add_argument("--decode-efficiency", type=float, default=0.4,
                    help="share of the bandwidth bound that HF generate reaches (measured here on CPU: about 0.2)")
    ap.add_argument("--load-s", type=float, default=10.0, help="seconds to load the 16 GB model once (NVMe)")
    args = ap.parse_args()

    from neuronkit.config import load_config_files, stage_params

    cfg = load_config_files([ROOT / "config.yaml"])
    sp = lambda stage: stage_params(cfg, "llama3", stage)  # noqa: E731
    n = {name: spec.get("n") for name, spec in cfg["datasets"].items()}
    full = {"harmbench_val": 41, "xstest_safe": 250, "borderline_train": 210, "contrast_train": 140,
            "task_train": 200}
    size = lambda d: n[d] or full.get(d, 100)  # noqa: E731
    weights_gb = SHAPE["params"] * BYTES_PER_PARAM / 1e9
    step_s = weights_gb / (args.bandwidth_tbs * 1e3)  # one decoding step reads every weight once
    flops = args.tflops * 1e12 * args.mfu

    def decode(prompts: int, new_tokens: int, batch: int, models: float = 1.0) -> float:
        steps = math.ceil(prompts / batch) * new_tokens
        prefill = prompts * args.prompt_tokens * 2 * SHAPE["params"] / flops
        return models * (steps * step_s / args.decode_efficiency + prefill)

    def forward(tokens: float, factor: float = 2.0) -> float:
        return tokens * factor * SHAPE["params"] / flops

    gen, selfa = sp("generate"), sp("self_answers")
    ev = cfg["evaluation"]
    eval_prompts = sum(size(d) for d in ev["harmful"] + ev["benign"])
    align_sets = [cfg["alignment"]["harmful"], cfg["alignment"]["benign"], *cfg["alignment"]["borderline"]]
    sft, pref = sp("sft"), sp("preference")
    sft_rows = sum(size(d) for d in align_sets)
    plnd, patch, contrast, nlsr = sp("plnd"), sp("patching"), sp("contrast"), sp("nlsr")
    patch_prompts = sum(size(d) for d in patch["datasets"])
    t = plnd["max_length"]
    qk_elems = SHAPE["layers"] * (SHAPE["heads"] + SHAPE["kv_heads"]) * SHAPE["head_dim"] * t * t
    plnd_doc_s = qk_elems * 4 * 6 / (args.bandwidth_tbs * 1e12) + forward(t)
    p_grid = nlsr["p_grid"]
    stages = {
        "self_answers (alignment sets)": decode(sft_rows, selfa["max_new_tokens"], selfa["batch_size"]),
        "sft": forward(sft_rows * (args.prompt_tokens + selfa["max_new_tokens"]) * sft["epochs"], 6),
        "preference (dpo, 1 epoch)": forward(sft_rows * 2 * (args.prompt_tokens + selfa["max_new_tokens"]), 8),
        "generate: base + aligned + sntune + rsntune on the evaluation sets":
            decode(eval_prompts * 4, gen["max_new_tokens"], gen["batch_size"]),
        "judge: answer perplexity under the base": forward(eval_prompts * 4 * (args.prompt_tokens + gen["max_new_tokens"])),
        "contrast: generate + A and U teacher-forced (safety and helpfulness prompts)": sum(
            decode(size(contrast[key]), contrast["max_new_tokens"], contrast["batch_size"])
            + forward(size(contrast[key]) * (args.prompt_tokens + contrast["max_new_tokens"]) * 2)
            for key in ("dataset", "helpful_dataset")),
        "patch_generate: k grid x (safety, random) x datasets, two models":
            decode(patch_prompts * len(patch["k_grid"]) * 2, gen["max_new_tokens"], gen["batch_size"], models=2),
        f"plnd: {plnd['n_docs']} + {plnd['n_docs']} documents x {t} tokens": 2 * plnd["n_docs"] * plnd_doc_s,
        "deactivation: 3 sets of neurons (safety, 2 controls) x datasets": decode(3 * sum(size(d) for d in sp("deactivation")["datasets"]),
                                                             gen["max_new_tokens"], gen["batch_size"]),
        "sntune + rsntune": 2 * forward(sp("sntune")["n_docs"] * sp("sntune")["max_length"] * sp("sntune")["epochs"], 6),
        f"nlsr: attack x {len(p_grid)} p": len(p_grid) * forward(nlsr["n"] * 160 * nlsr["attack"]["epochs"], 6),
        "nlsr: generate attacked + realigned": decode(len(p_grid) * 2 * (sum(size(d) for d in nlsr["datasets"]) + 100),
                                                      gen["max_new_tokens"], gen["batch_size"]),
    }
    jobs = dry_run_jobs()
    general = sp("general")
    tasks = [GENERAL_TASKS[name] for name in general["tasks"]]
    stages[f"general: lm-eval {', '.join(general['tasks'])} x {jobs.get('general', 0)} variants"] = jobs.get(
        "general", 0) * sum(forward(t["docs"] * t["forward_tokens"])
                            + decode(t["docs"], t["new_tokens"], general["batch_size"]) * bool(t["new_tokens"])
                            for t in tasks)
    loads = sum(count * MODEL_LOADS.get(rule, 0) for rule, count in jobs.items())
    stages[f"model loads: {loads} (every model job loads its checkpoints)"] = loads * args.load_s
    memory = {"weights, one model (bf16)": weights_gb, "two-model patching": 2 * weights_gb,
              "PLND q/k chunk (fp32, one head's dims x T x T)": SHAPE["head_dim"] * t * t * 4 / 1e9 * 2,
              "LoRA SFT (weights + activations at batch 8 x 512, checkpointing)": weights_gb + 6}
    total = sum(stages.values())
    result = {"assumptions": vars(args) | {"shape": SHAPE, "decode_step_s": step_s}, "jobs": jobs,
              "stages_s": {k: round(v, 1) for k, v in stages.items()}, "total_s": round(total, 1),
              "memory_gb": {k: round(v, 1) for k, v in memory.items()},
              "plnd_qk": {"elements_per_document": qk_elems, "seconds_per_document": round(plnd_doc_s, 3),
                          "at": {"tokens": t, "dims": SHAPE["hidden"], "layers": SHAPE["layers"]}}}
    out = ROOT / "benchmarks" / "out" / "llama3_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, seconds in stages.items():
        print(f"{name:70} {seconds / 60:8.1f} min")
    print(f"{'total':70} {total / 60:8.1f} min")
    print(f"PLND q/k: {qk_elems:.2e} softmax elements per document, {plnd_doc_s:.2f} s per document")
    for name, gb in memory.items():
        print(f"memory {name:62} {gb:6.1f} GB")


if __name__ == "__main__":
    main()
