"""Safeguard (Finding Safety Neurons; docs/methods.md, A5): predict an unsafe answer from neuron activations before
generation.

Features are the activations of the top-k neurons at the last prompt token. A standardised,
L2-regularised logistic regression (scikit-learn's ``StandardScaler`` + ``LogisticRegression`` in a ``Pipeline``,
L-BFGS in float64, so it is deterministic) predicts whether the model's own greedy answer was judged harmful. It is
compared with the same probe on random neurons (same per-layer counts) and with the majority class, by an exact
McNemar test on per-prompt correctness. A degenerate answer (the three-way judge's third verdict) is neither safe nor
unsafe, so it is left out of training and testing by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .hooks import capture
from .models import chat_prompt


@dataclass(frozen=True)
class SafeguardConfig:
    """Probe size and fit settings."""

    k: int | float = 0.02
    l2: float = 1.0
    batch_size: int = 16
    seed: int = 0
    system_prompt: str | None = None
    drop_degenerate: bool = True


@torch.no_grad()
def last_prompt_activations(model, tok, prompts: Sequence[str], layers: Sequence[int], batch_size: int = 16,
                            system_prompt: str | None = None) -> dict[int, torch.Tensor]:
    """``layer -> [prompts, N]`` MLP activations at the last prompt token, from one pass over the prompts."""
    from .archs import submodule

    texts = [chat_prompt(tok, p, system_prompt) for p in prompts]
    tok.padding_side = "left"
    device = next(model.parameters()).device
    chunks: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        with capture(model, [(l, "mlp") for l in layers]) as store:
            submodule(model, "decoder")(**enc, use_cache=False)
        for l in layers:
            chunks[l].append(store[(l, "mlp")][:, -1].float().cpu())
    return {l: torch.cat(c) for l, c in chunks.items()}


def index_features(activations: dict[int, torch.Tensor], index) -> torch.Tensor:
    """``[prompts, k]`` features of the index's neurons, in index order."""
    return torch.stack([activations[l][:, n] for l, n in zip(index.layer.tolist(), index.neuron.tolist())], 1).double()


def last_prompt_features(model, tok, prompts: Sequence[str], index, batch_size: int = 16,
                         system_prompt: str | None = None) -> torch.Tensor:
    """``[prompts, k]`` activations of the index's MLP neurons at the last prompt token (index order)."""
    layers = sorted(set(index.layer.tolist()))
    return index_features(last_prompt_activations(model, tok, prompts, layers, batch_size, system_prompt), index)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1.0):
    """Standardise, then minimise the mean log-loss + l2/2 |w|^2 / n: scikit-learn's ``C`` is 1 / l2. A training set
    with one class gets a constant predictor of that class (a logistic fit has no optimum there)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = x.double().numpy(), y.bool().numpy()
    if len(set(labels.tolist())) < 2:
        return DummyClassifier(strategy="most_frequent").fit(features, labels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, solver="lbfgs", max_iter=1000, tol=1e-8))
    return probe.fit(features, labels)


def predict(model, x: torch.Tensor) -> torch.Tensor:
    """The fitted probe's unsafe / safe call for each row of ``x``."""
    return torch.from_numpy(model.predict(x.double().numpy()).astype(bool))


def classification_metrics(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy (with its 95% Wilson interval, as a fraction) and F1 of the positive (unsafe) class."""
    from .significance import wilson_interval

    pred, y = pred.bool(), y.bool()
    tp = int((pred & y).sum())
    fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    correct = int((pred == y).sum())
    low, high = wilson_interval(correct, len(y))
    return {"accuracy": round(correct / len(y), 4) if len(y) else None, "ci95": [round(low / 100, 4),
            round(high / 100, 4)], "f1": round(f1, 4), "n": len(y), "positives": int(y.sum())}


def probe_predictions(train: tuple[torch.Tensor, torch.Tensor], tests: Mapping[str, torch.Tensor],
                      l2: float) -> dict[str, torch.Tensor]:
    """Fit on the train set; the probe's calls on each test set."""
    model = fit_logistic(*train, l2=l2)
    return {name: predict(model, x) for name, x in tests.items()}


def majority_predictions(y_train: torch.Tensor, tests: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training majority class everywhere (each test set given by its labels, for its length)."""
    majority = bool(y_train.double().mean() >= 0.5)
    return {name: torch.full_like(y, majority, dtype=torch.bool) for name, y in tests.items()}


def paired_accuracy_tests(calls: Mapping[str, Mapping[str, torch.Tensor]], labels: Mapping[str, torch.Tensor],
                          first: str = "safety") -> dict:
    """Exact McNemar on per-prompt correctness: the ``first`` selection's probe against every other, per test set."""
    from .significance import mcnemar_exact

    out = {}
    for other in (name for name in calls if name != first):
        out[f"{first}_vs_{other}"] = {
            t: mcnemar_exact((calls[first][t] == y).tolist(), (calls[other][t] == y).tolist())
            for t, y in labels.items()}
    return out


def unsafe_labels(table) -> torch.Tensor:
    """1 where a harmful prompt's answer was judged harmful; benign prompts count as safe."""
    harmful = table.column("harmful").to_pylist()
    labels = table.column("label").to_pylist()
    return torch.tensor([bool(h) and lab == "harmful" for h, lab in zip(harmful, labels)])


def coherent_rows(table):
    """The rows whose answer is language: a degenerate answer is neither safe nor unsafe, so it labels nothing."""
    if "degenerate" not in table.column_names:
        return table
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.fill_null(table.column("degenerate"), False)))


def labelled_prompts(tables: Sequence, origin: str, drop_degenerate: bool = True) -> tuple[list[str], torch.Tensor, int]:
    """Prompts, unsafe labels and the count of degenerate rows left out, over scored tables read from ``origin``."""
    kept = [coherent_rows(t) for t in tables] if drop_degenerate else list(tables)
    if not sum(t.num_rows for t in kept):
        raise ValueError(f"safeguard: every answer in {origin} is degenerate, so no row carries a label "
                         "(set safeguard.drop_degenerate: false to label them safe)")
    prompts = [p for t in kept for p in t.column("prompt").to_pylist()]
    dropped = sum(t.num_rows for t in tables) - sum(t.num_rows for t in kept)
    return prompts, torch.cat([unsafe_labels(t) for t in kept]), dropped


def safeguard_files(ckpt, index_path, train_scored: Sequence[str], test_scored: Mapping[str, str],
                    cfg: SafeguardConfig) -> dict:
    """Workflow entry: probe on safety neurons vs random neurons vs majority class."""
    from .data import read_table
    from .models import load_variant
    from .neurons import NeuronIndex, resolve_k

    model, tok = load_variant(ckpt)
    full = NeuronIndex.read(index_path)
    full.check_fits(model.config, origin=str(index_path))
    safety = full.top(resolve_k(cfg.k, len(full)))
    selections = {"safety": safety, "random": safety.random_like(cfg.seed)}

    train_tables = [read_table(p) for p in train_scored]
    train_prompts, y_train, train_dropped = labelled_prompts(train_tables, ", ".join(map(str, train_scored)),
                                                             cfg.drop_degenerate)
    tests = {name: labelled_prompts([read_table(path)], str(path), cfg.drop_degenerate)
             for name, path in test_scored.items()}
    out = {"k": len(safety), "train": {"datasets": [Path(p).stem for p in train_scored], "n": len(y_train),
                                       "positives": int(y_train.sum()), "degenerate_dropped": train_dropped},
           "label": "the model's own greedy answer to a harmful prompt judged harmful"
                    + (" (degenerate answers left out)" if cfg.drop_degenerate else " (degenerate answers count as safe)"),
           "judge": train_tables[0].column("judge")[0].as_py(),
           "test": {t: {"n": len(y), "positives": int(y.sum()), "degenerate_dropped": d}
                    for t, (_, y, d) in tests.items()}}
    layers = sorted({l for index in selections.values() for l in index.layer.tolist()})
    acts = lambda prompts: last_prompt_activations(model, tok, prompts, layers, cfg.batch_size, cfg.system_prompt)  # noqa: E731
    train_acts = acts(train_prompts)
    test_acts = {t: acts(p) for t, (p, _, _) in tests.items()}
    labels = {t: y for t, (_, y, _) in tests.items()}
    calls = {name: probe_predictions((index_features(train_acts, index), y_train),
                                     {t: index_features(a, index) for t, a in test_acts.items()}, cfg.l2)
             for name, index in selections.items()}  # one forward per prompt set serves every selection
    calls["majority"] = majority_predictions(y_train, labels)
    for name, by_set in calls.items():
        out[name] = {t: classification_metrics(pred, labels[t]) for t, pred in by_set.items()}
    out["paired"] = paired_accuracy_tests(calls, labels)
    return out
