"""Assemble report.json from the stage sections and the variants' manifests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from . import __version__, manifest
from .artifacts import read_json
from .plotting import pyplot, save_figure


def variant_summary(ckpt_dir: str | os.PathLike) -> dict:
    """What the report says about a checkpoint: its lineage and training settings."""
    var = manifest.read(ckpt_dir)
    return {"kind": var.kind, "method": var.method, "source": var.source, "parent": var.parent,
            "params": var.params, "inputs": var.inputs}


def build_report(model: str, sections: Mapping[str, str | os.PathLike], variant_dirs: Sequence[str]) -> dict:
    """One object with a section per stage; every figure inside names its dataset, n and judge."""
    report = {"model": model, "neuronkit_version": __version__,
              "variants": {Path(d).name: variant_summary(d) for d in variant_dirs}}
    for name, path in sections.items():
        report[name] = read_json(path)
    return report


def plot_restore_curve(section: dict, out_png) -> None:
    """R(k) for safety vs random neurons, one line pair per harmful dataset (benign sets carry no R)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    harmful = [p for p in section["points"] if p.get("metric", "harmful_score") == "harmful_score"]
    for dataset in sorted({p["dataset"] for p in harmful}):
        pts = sorted((p for p in harmful if p["dataset"] == dataset), key=lambda p: p["neurons"])
        xs = [p["neurons"] for p in pts]
        for selection, style in (("safety", "-o"), ("random", "--s")):
            ys = [p.get(f"restore_{selection}") for p in pts]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=f"{selection} ({dataset})")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("patched MLP neurons (k)")
    ax.set_ylabel("restore ratio R(k)")
    ax.set_title("Dynamic activation patching: safety restored")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png)


def plot_nlsr(section: dict, out_png) -> None:
    """Harmful score and task accuracy against the poison fraction for attacked and realigned adapters."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for kind, style in (("attacked", "-o"), ("nlsr", "-s"), ("nlsr_random", "x")):  # the control: points only
        pts = sorted((v for v in section["variants"] if v["kind"] == kind), key=lambda v: v["p"])
        harmful = [next((f["value"] for k, f in v["figures"].items() if k.startswith("harmful_score")), None)
                   for v in pts]
        task = [v["figures"].get("task_accuracy", {}).get("accuracy") for v in pts]
        if pts:
            axes[0].plot([v["p"] for v in pts], harmful, style, label=kind)
            axes[1].plot([v["p"] for v in pts], task, style, label=kind)
    for ax, label in zip(axes, ("harmful score (%)", "task accuracy (%)")):
        for v in section["variants"]:
            if v["kind"] in ("aligned", "reference"):
                val = (next((f["value"] for k, f in v["figures"].items() if k.startswith("harmful_score")), None)
                       if ax is axes[0] else v["figures"].get("task_accuracy", {}).get("accuracy"))
                if val is not None:
                    ax.axhline(val, ls=":", lw=1, color="green" if v["kind"] == "aligned" else "purple",
                               label=v["kind"])
        ax.set_xlabel("harmful fraction p")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("NLSR: harmful fine-tuning and realignment")
    fig.tight_layout()
    save_figure(fig, out_png)


SCORE_METRICS = ("harmful_score", "over_refusal")


def required_field(obj: Mapping, key: str, where: str):
    """A field the plot cannot do without; the error names where it was expected."""
    if not isinstance(obj, Mapping) or key not in obj:
        raise ValueError(f"{where}: missing field {key!r}")
    return obj[key]


def variant_score_bars(section: dict) -> tuple[list[str], dict[str, dict[str, list]]]:
    """Variants in report order and, per metric and dataset, each variant's figure (None where unscored)."""
    figures = required_field(section, "figures", "evaluation section")
    if not figures:
        raise ValueError("evaluation section: field 'figures' is empty; nothing to plot")
    for i, fig in enumerate(figures):
        for key in ("variant", "metric", "dataset", "value"):
            required_field(fig, key, f"evaluation section: figures[{i}]")
    variants = list(dict.fromkeys(f["variant"] for f in figures))
    bars: dict[str, dict[str, dict[str, dict]]] = {}
    for fig in figures:
        if fig["metric"] in SCORE_METRICS:
            bars.setdefault(fig["metric"], {}).setdefault(fig["dataset"], {})[fig["variant"]] = fig
    return variants, {metric: {dataset: [by_variant.get(v) for v in variants]
                               for dataset, by_variant in sorted(bars[metric].items())}
                      for metric in SCORE_METRICS if metric in bars}


def _n_label(figures: Sequence[dict | None]) -> str:
    """'n=40', or the range when the variants were scored on different counts."""
    ns = sorted({f["n"] for f in figures if f is not None and "n" in f})
    if not ns:
        return "n=?"
    return f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"


def _draw_score_panel(ax, metric: str, variants: list[str], by_dataset: dict[str, list]) -> None:
    """One group of bars per variant, one bar per dataset, 95% CI as error bars."""
    width = 0.8 / len(by_dataset)
    for j, (dataset, figures) in enumerate(by_dataset.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(variants))]
        values = [float("nan") if f is None else f["value"] for f in figures]
        cis = [f.get("ci95") if f is not None else None for f in figures]
        low = [0.0 if ci is None else max(v - ci[0], 0.0) for v, ci in zip(values, cis)]
        high = [0.0 if ci is None else max(ci[1] - v, 0.0) for v, ci in zip(values, cis)]
        ax.bar(xs, values, width, yerr=[low, high], capsize=3, label=f"{dataset} ({_n_label(figures)})")
    judges = sorted({f["judge"] for figs in by_dataset.values() for f in figs if f is not None and "judge" in f})
    ax.set_xticks(range(len(variants)), variants, rotation=30 if len(variants) > 4 else 0, ha="right"
                  if len(variants) > 4 else "center")
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.set_title(f"{metric.replace('_', ' ')} (judge: {', '.join(judges) or '?'})", fontsize=10)
    ax.legend(fontsize=7)


def plot_variant_scores(evaluation_section: dict, out_png) -> None:
    """Harmful score and over-refusal per variant, with their 95% intervals, so variants compare at a glance."""
    plt = pyplot()

    variants, panels = variant_score_bars(evaluation_section)
    if not panels:
        raise ValueError(f"evaluation section: no figure has a metric in {list(SCORE_METRICS)}")
    panel_width = min(7.0, 2.5 + 0.6 * len(variants))
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_width * len(panels), 3.8), dpi=100, squeeze=False)
    for ax, (metric, by_dataset) in zip(axes[0], panels.items()):
        _draw_score_panel(ax, metric, variants, by_dataset)
    fig.suptitle("Harmful score and over-refusal per variant (bars: 95% CI)")
    fig.tight_layout()
    save_figure(fig, out_png)


PLND_SETS = ("safety", "foundation", "rsn")
MODULE_ORDER = ("mlp", "q", "k", "v", "o")  # archs.MODULES, not imported here because archs pulls in torch


def neurons_per_layer_panels(sections: Mapping) -> list[tuple[str, dict[str, list[int]]]]:
    """(title, counts per layer by module) for each neuron set the sections hold: contrast top-k, then PLND."""
    panels = []
    for method, entry in sorted((sections.get("neurons") or {}).items()):
        if isinstance(entry, Mapping) and entry.get("top_per_layer"):
            fraction = entry.get("top_fraction")
            share = f", {fraction:.1%} of sites" if isinstance(fraction, (int, float)) else ""
            panels.append((f"{method}: top {entry.get('top_k', '?')} neurons{share}", entry["top_per_layer"]))
    plnd = (sections.get("sntune") or {}).get("neurons") or {}
    for name in [*PLND_SETS, *sorted(set(plnd) - set(PLND_SETS))]:
        if isinstance(plnd.get(name), Mapping) and plnd[name].get("per_layer"):
            label = "RSN (safety minus foundation)" if name == "rsn" else name
            panels.append((f"PLND {label}: {plnd[name].get('total', '?')} neurons", plnd[name]["per_layer"]))
    if not panels:
        raise ValueError("no per-layer neuron counts: expected neurons.<method>.top_per_layer "
                         "or sntune.neurons.<safety|foundation|rsn>.per_layer")
    return panels


def plot_neurons_per_layer(sections: Mapping, out_png) -> None:
    """Where in depth the safety neurons sit: one stacked-by-module bar chart per neuron set found."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = neurons_per_layer_panels(sections)
    modules = sorted({m for _, per_layer in panels for m in per_layer},
                     key=lambda m: (MODULE_ORDER.index(m) if m in MODULE_ORDER else len(MODULE_ORDER), m))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(modules)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 0.6 + 1.9 * len(panels)), dpi=100, squeeze=False,
                             sharex=True)
    for ax, (title, per_layer) in zip(axes[:, 0], panels):
        bottom = [0] * max(len(c) for c in per_layer.values())
        for module in (m for m in modules if m in per_layer):
            counts = list(per_layer[module]) + [0] * (len(bottom) - len(per_layer[module]))
            ax.bar(range(len(bottom)), counts, 0.8, bottom=bottom, color=colours[module], label=module)
            bottom = [b + c for b, c in zip(bottom, counts)]
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("neurons")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1, 0].set_xlabel("layer")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    save_figure(fig, out_png)
