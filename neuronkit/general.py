"""General ability through lm-evaluation-harness: did an intervention cost the model what it knew?

The config's ``general`` section names lm-eval tasks per model: hub tasks by their lm-eval names (``mmlu``,
``arc_challenge``, ``gsm8k``: their datasets must be in the Hugging Face cache on an offline node) and the local
tasks below, whose data ships with the workflow. Each checkpoint variant is loaded as the workflow loads it
(adapters merged, manifests verified) and handed to lm-eval's ``HFLM`` as a model object, so what lm-eval scores is
exactly the variant the other figures score. Every accuracy comes with its n and a 95% Wilson interval counted from
lm-eval's per-sample results.

    result = general_ability("results/smollm2/checkpoints/aligned", GeneralConfig(tasks=("mmlu_slice_cloze",)))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
SLICE = "data/benchmarks/mmlu_slice.jsonl"
# Local tasks: name -> (data file relative to the workflow root, what it is, lm-eval prompt fields). The data is
# vendored with its licence; the prompts are lm-eval's own MMLU ones (tasks/mmlu/default and tasks/mmlu/continuation),
# so each slice scores like the full task it samples.
LOCAL_TASKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mmlu_slice": (SLICE, "MMLU test split, 5 questions per subject (285), zero-shot, lm-eval's MMLU prompt: the "
                          "answer letter after the lettered choices (near chance for models under ~1B)", {
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                       "D. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}),
    "mmlu_slice_cloze": (SLICE, "the same 285 MMLU questions, zero-shot, lm-eval's MMLU continuation prompt: the "
                                "log-likelihood of each answer's text (the cloze form small models are reported on)", {
        "description": "The following are questions (with answers) about {{subject.replace('_', ' ')}}.\n\n",
        "doc_to_text": "Question: {{question.strip()}}\nAnswer:", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]}),
}


class GeneralAbilityError(ValueError):
    """A ``general`` setting or an lm-eval result the workflow cannot use."""


@dataclass(frozen=True)
class GeneralConfig:
    """lm-eval settings; defaults are the offline ones (the vendored MMLU slice in cloze form, zero-shot)."""

    tasks: tuple[str, ...] = ("mmlu_slice_cloze",)
    num_fewshot: int | None = None   # None: each task's own default (0 for the local tasks)
    limit: int | None = None         # first N documents per task (None: all)
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise GeneralAbilityError(f"general.tasks must be a non-empty list of lm-eval task names, got "
                                      f"{list(self.tasks)!r}")
        for name in ("num_fewshot", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise GeneralAbilityError(f"general.{name} must be a whole number >= 0 or null, got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise GeneralAbilityError(f"general.batch_size must be a whole number >= 1, got {self.batch_size!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], seed: int = 0) -> "GeneralConfig":
        """Build from the config's ``general`` section (the variant list is the workflow's business)."""
        known = {f.name for f in fields(cls)}
        picked = {k: v for k, v in cfg.items() if k in known and k != "seed"}
        return cls(**{**picked, "tasks": tuple(picked.get("tasks", cls.tasks))}, seed=seed)


def local_task(name: str, cache_dir: str | os.PathLike, root: Path = ROOT) -> dict[str, Any]:
    """The lm-eval task config of a local task, its data file resolved against the workflow root."""
    path = root / LOCAL_TASKS[name][0]
    if not path.is_file():
        raise GeneralAbilityError(f"general: the data of local task {name!r} is missing: {path}")
    return {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(path)}, "cache_dir": str(cache_dir)},
            "test_split": "test", "output_type": "multiple_choice", **LOCAL_TASKS[name][2],
            "metadata": {"version": 1.0, "source": LOCAL_TASKS[name][1]}}


def task_specs(tasks: Sequence[str], cache_dir: str | os.PathLike, root: Path = ROOT) -> list[str | dict]:
    """What lm-eval is given: a config dict for each local task, the name for each hub task."""
    return [local_task(t, cache_dir, root) if t in LOCAL_TASKS else t for t in tasks]


PER_SAMPLE_METRICS = ("acc", "exact_match")  # multiple choice, generative (gsm8k): 1.0 per correct document


def leaf_samples(output: Mapping[str, Any], task: str) -> list[dict]:
    """A requested task's per-document samples in document order; a group (``mmlu``) pools its subtasks' samples,
    subtask after subtask."""
    groups = output.get("group_subtasks", {})
    if task in output.get("samples", {}):
        return sorted(output["samples"][task], key=lambda s: (str(s.get("filter", "none")), int(s["doc_id"])))
    if task in groups:
        return [s for sub in groups[task] for s in leaf_samples(output, sub)]
    raise GeneralAbilityError(f"general: lm-eval returned no samples for task {task!r} "
                              f"(it returned {sorted(output.get('samples', {}))})")


def scored_flags(samples: Sequence[dict], task: str) -> tuple[str, str, list[bool]]:
    """(metric, filter, per-document correct flags) under the first filter by name (gsm8k: flexible-extract)."""
    if not samples:
        raise GeneralAbilityError(f"general: lm-eval task {task!r} scored no documents")
    first_filter = samples[0].get("filter", "none")
    kept = [s for s in samples if s.get("filter", "none") == first_filter]
    metric = next((m for m in PER_SAMPLE_METRICS if m in kept[0]), None)
    if metric is None:
        raise GeneralAbilityError(f"general: lm-eval task {task!r} has no per-document {list(PER_SAMPLE_METRICS)} "
                                  f"(keys {sorted(kept[0])}); only accuracy tasks are supported")
    return metric, first_filter, [float(s[metric]) > 0.5 for s in kept]


def accuracy_rows(output: Mapping[str, Any], tasks: Sequence[str], variant: str) -> dict[str, dict[str, Any]]:
    """Per requested task, the report's figure (k of n, %, 95% Wilson interval) counted from lm-eval's per-document
    results, and those results in document order (``correct``) for paired tests between variants."""
    from .significance import rate_metric

    rows = {}
    for task in tasks:
        samples = leaf_samples(output, task)
        metric, filt, flags = scored_flags(samples, task)
        judge = f"lm-eval {task} {metric}" + ("" if filt == "none" else f" ({filt})")
        figure = rate_metric(flags, metric="accuracy", dataset=task, variant=variant, judge=judge)
        rows[task] = {**figure, "n_shot": output.get("n-shot", {}).get(task), "correct": flags}
        if metric == "acc" and "acc_norm" in samples[0]:  # cloze tasks: length-normalised log-likelihood too
            normalised = [float(s["acc_norm"]) > 0.5 for s in samples if s.get("filter", "none") == filt]
            rows[task]["acc_norm"] = rate_metric(normalised, metric="accuracy", dataset=task, variant=variant,
                                                 judge=f"lm-eval {task} acc_norm")
    return rows


def evaluate_model(model, tok, cfg: GeneralConfig, variant: str, root: Path = ROOT) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` on a loaded model; returns the accuracy rows and what was run."""
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="lm-eval-") as cache:
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size)
        output = simple_evaluate(model=lm, tasks=task_specs(cfg.tasks, cache, root), task_manager=TaskManager(),
                                 num_fewshot=cfg.num_fewshot, limit=cfg.limit, log_samples=True, bootstrap_iters=0,
                                 random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
                                 fewshot_random_seed=cfg.seed)
    if output is None:
        raise GeneralAbilityError("general: lm-eval returned no results")
    return {"variant": variant, "tasks": accuracy_rows(output, cfg.tasks, variant),
            "lm_eval_version": lm_eval.__version__, "config": asdict(cfg),
            "local_tasks": {t: LOCAL_TASKS[t][1] for t in cfg.tasks if t in LOCAL_TASKS}}


def general_ability(ckpt_dir: str | os.PathLike, cfg: GeneralConfig, *, variant: str | None = None,
                    trust_remote_code: bool | None = None, root: Path = ROOT) -> dict[str, Any]:
    """Load a checkpoint variant (adapters merged) and score it on the configured lm-eval tasks."""
    import torch

    from .models import load_variant, pick_device

    torch.manual_seed(cfg.seed)
    model, tok = load_variant(ckpt_dir, device=pick_device(), merge=True, trust_remote_code=trust_remote_code)
    model.eval()
    with torch.no_grad():
        return evaluate_model(model, tok, cfg, variant or Path(ckpt_dir).name, root)


def general_section(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Report section: each variant's accuracy per task, and exact McNemar tests of every variant against the first
    on the same documents (a drop is claimed only where the test says so)."""
    from .significance import mcnemar_exact

    if not results:
        raise GeneralAbilityError("general section: no variant results")
    reference = results[0]
    figures, paired = [], []
    for result in results:
        for task, row in result["tasks"].items():
            figures.append({k: v for k, v in row.items() if k != "correct"})
            if result is reference:
                continue
            base = reference["tasks"].get(task)
            if base is None or len(base["correct"]) != len(row["correct"]):
                raise GeneralAbilityError(f"general section: {result['variant']} and {reference['variant']} were "
                                          f"not scored on the same documents of {task}")
            paired.append({"dataset": task, "first": result["variant"], "second": reference["variant"],
                           "n": row["n"], "first_percent": row["value"], "second_percent": base["value"],
                           **mcnemar_exact(row["correct"], base["correct"])})
    return {"figures": figures, "paired": paired, "reference_variant": reference["variant"],
            "lm_eval_version": reference["lm_eval_version"], "config": reference["config"],
            "local_tasks": reference["local_tasks"],
            "definitions": {"accuracy": "share of documents lm-eval scores correct (multiple choice: the answer "
                                        "letter has the highest log-likelihood)",
                            "paired": "exact McNemar test of the variant against the reference variant on the same "
                                      "documents; significant at p < 0.05"}}
