"""One self-contained HTML page from report.json and its plots: inline CSS, base64 PNGs, no scripts, no URLs.

The page is meant to be mailed or archived as a single file, so nothing in it loads anything from elsewhere,
and the same inputs give the same bytes (no timestamps, no dict-order surprises beyond the report's own).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .report import required_field

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

PLOT_TITLES = {
    "variant_scores": "Harmful score and over-refusal per variant",
    "restore_curve": "Restore ratio R(k): safety versus random neurons",
    "neurons_per_layer": "Safety neurons per layer",
    "nlsr": "NLSR: harmful fine-tuning and realignment",
    "overlap_heatmap": "Overlap between neuron sets",
}

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1150px; }
h1 { margin-bottom: 0.1em; }
.meta { color: #555; margin-top: 0; }
figure { margin: 1em 0 1.8em 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; max-width: 60em; margin-top: 0.4em; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #f2f2f2; }
caption { text-align: left; font-size: 0.95em; padding: 0.2em 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.missing { color: #888; font-style: italic; }
p.note { font-size: 0.9em; color: #444; }
nav ul { columns: 2; font-size: 0.9em; }
"""


def esc(value) -> str:
    """Every piece of report text goes through here, so no field can inject markup."""
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    """Compact, stable text for a table cell (4 significant digits for floats)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def fmt_ci(ci) -> str:
    """'62.5–87.68' for a [low, high] pair, a dash when absent."""
    return f"{fmt(ci[0])}–{fmt(ci[1])}" if isinstance(ci, (list, tuple)) and len(ci) == 2 else "—"


def distinct(items: Iterable[Mapping], key: str) -> str:
    """The distinct values of one field, joined, for captions ('harmful_novel, harmful_test')."""
    values = [item[key] for item in items if isinstance(item, Mapping) and item.get(key) is not None]
    is_number = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in values]
    numbers = sorted({v for v, number in zip(values, is_number) if number})
    others = sorted({fmt(v) for v, number in zip(values, is_number) if not number})
    return ", ".join([fmt(v) for v in numbers] + others) or "?"


def table(headers: Sequence[str], rows: Iterable[Sequence], caption: str | None = None) -> str:
    """An HTML table; numeric cells are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>\n" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def cell(value) -> str:
    """One <td>, escaped."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{esc(fmt(value))}</td>' if numeric else f"<td>{esc(fmt(value))}</td>"


def key_value_table(obj: Mapping, keys: Sequence[str] | None = None) -> str:
    """Scalar settings as a two-column table."""
    keys = [k for k in (keys or sorted(obj)) if k in obj and not isinstance(obj[k], Mapping)]
    return table(("field", "value"), ((k, obj[k]) for k in keys)) if keys else ""


def figure_value(fig: Mapping):
    """A rate figure's number: 'value' for judged scores, 'accuracy' for task accuracy."""
    return fig.get("value", fig.get("accuracy"))


def figures_table(figures: Sequence[Mapping], where: str) -> str:
    """Judged figures (variant, metric, dataset, value, CI, k/n, degenerate share, judge), one row each."""
    rows = []
    for i, fig in enumerate(figures):
        for key in ("variant", "metric", "n"):
            required_field(fig, key, f"{where}[{i}]")
        broken = fig.get("degenerate") or {}
        rows.append((fig["variant"], fig["metric"], fig.get("dataset"), figure_value(fig), fig.get("unit"),
                     fmt_ci(fig.get("ci95")), fig.get("k"), fig["n"], broken.get("value"), fmt_ci(broken.get("ci95")),
                     fig.get("answer_perplexity_median"), fig.get("judge", fig.get("rule"))))
    return table(("variant", "metric", "dataset", "value", "unit", "95% CI", "k", "n", "degenerate %",
                  "degenerate 95% CI", "answer perplexity (median)", "judge"), rows)


def png_size(data: bytes, origin: str) -> tuple[int, int]:
    """Width and height from the PNG header; anything else is refused, since the page embeds image/png."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24:
        raise ValueError(f"{origin}: not a PNG file")
    return struct.unpack(">II", data[16:24])


def ordered_plot_names(plots: Mapping) -> list[str]:
    """Known plots in reading order, then any others by name."""
    known = [name for name in PLOT_TITLES if name in plots]
    return known + sorted(set(plots) - set(known))


def figure_html(number: int, name: str, path, caption: str) -> str:
    """A <figure> with the PNG inlined as base64 at its natural size, and its caption."""
    if not PLOT_NAME.match(name):
        raise ValueError(f"plot name {name!r}: use letters, digits, '_' or '-' only (it becomes an HTML id)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plot {name!r}: {path} does not exist")
    data = path.read_bytes()
    width, height = png_size(data, f"plot {name!r} ({path})")
    title = PLOT_TITLES.get(name, name.replace("_", " "))
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure id="fig-{name}">\n<img id="plot-{name}" alt="{esc(title)}" width="{width}" '
            f'height="{height}" src="{src}">\n<figcaption><b>Figure {number}. {esc(title)}.</b> '
            f"{esc(caption)}</figcaption>\n</figure>\n")


# ---- captions: what each plot shows and on which dataset, n and judge ----

def caption_variant_scores(report: Mapping) -> str:
    """Which datasets, variants, n and judge the score bars come from."""
    figures = (report.get("evaluation") or {}).get("figures") or []
    harmful = [f for f in figures if f.get("metric") == "harmful_score"]
    benign = [f for f in figures if f.get("metric") == "over_refusal"]
    return (f"Bars: harmful score on {distinct(harmful, 'dataset')} and over-refusal on {distinct(benign, 'dataset')} "
            f"for variants {distinct(figures, 'variant')}; n = {distinct(figures, 'n')} prompts per dataset; "
            f"judge: {distinct(figures, 'judge')}. Error bars: 95% Wilson interval.")


def caption_restore_curve(report: Mapping) -> str:
    """Which neurons were patched from which model into which, on what data, judged how."""
    patching = report.get("patching") or {}
    points = patching.get("points") or []
    variants = patching.get("variants") or {}
    return (f"Restore ratio R(k) of the {patching.get('metric', '?')} when the top-k safety neurons (solid) or "
            f"as many random neurons (dashed) of {variants.get('aligned', '?')} are patched into "
            f"{variants.get('unaligned', '?')}; k = {distinct(points, 'neurons')} neurons. "
            f"Dataset: {distinct(points, 'dataset')}; n = {distinct(points, 'n')}; judge: {distinct(points, 'judge')}. "
            f"{patching.get('definition', '')}".strip())


def caption_neurons_per_layer(report: Mapping) -> str:
    """Which neuron sets are counted and the data each was found on."""
    parts = []
    for method, entry in sorted((report.get("neurons") or {}).items()):
        if not isinstance(entry, Mapping):
            continue
        meta = entry.get("meta") or {}
        parts.append(f"{method}: top {entry.get('top_k', '?')} neurons from {meta.get('dataset', '?')} "
                     f"({meta.get('prompts', '?')} prompts, {meta.get('tokens', '?')} tokens)")
    meta = (report.get("sntune") or {}).get("neurons_meta") or {}
    if (report.get("sntune") or {}).get("neurons"):
        parts.append(f"PLND safety, foundation and RSN neurons of {meta.get('variant', '?')} per module from "
                     f"{meta.get('dataset', '?')} (n = {meta.get('n_docs', '?')} documents)")
    return "Neurons per layer, stacked by module. " + ("; ".join(parts) or "No neuron section in the report") + "."


def caption_nlsr(report: Mapping) -> str:
    """Datasets, n, judge and task rule behind the NLSR curves."""
    variants = (report.get("nlsr") or {}).get("variants") or []
    figures = [f for v in variants for k, f in (v.get("figures") or {}).items() if k.startswith("harmful_score")]
    task = [v["figures"]["task_accuracy"] for v in variants if "task_accuracy" in (v.get("figures") or {})]
    return (f"Harmful score (left; {distinct(figures, 'dataset')}, n = {distinct(figures, 'n')}, judge: "
            f"{distinct(figures, 'judge')}) and task accuracy (right; n = {distinct(task, 'n')}, rule: "
            f"{distinct(task, 'rule')}) against the harmful fraction p, for attacked and NLSR-realigned adapters; "
            "dotted lines: aligned and reference.")


def caption_overlap_heatmap(report: Mapping) -> str:
    """How many neuron-set pairs the heat map compares, and at which k."""
    pairs = (report.get("overlap") or {}).get("pairs") or []
    return (f"Overlap between neuron sets (pairs: {len(pairs)}; modules: {distinct(pairs, 'module')}; "
            f"k = {distinct(pairs, 'k')}). See the overlap table for Jaccard against random and Spearman.")


CAPTIONS: dict[str, Callable[[Mapping], str]] = {
    "variant_scores": caption_variant_scores, "restore_curve": caption_restore_curve,
    "neurons_per_layer": caption_neurons_per_layer, "nlsr": caption_nlsr, "overlap_heatmap": caption_overlap_heatmap,
}


# ---- sections: one function per report section ----

def variants_html(variants: Mapping) -> str:
    """The variants' lineage, so every table row can be traced to a checkpoint."""
    rows = [(name, v.get("kind"), v.get("method"), v.get("parent"), v.get("source")) for name, v in variants.items()]
    return table(("variant", "kind", "method", "parent", "source"), rows)


def evaluation_html(section: Mapping) -> str:
    """Harmful score and over-refusal per variant and dataset, with n and CI; the variants' benign-text perplexity."""
    return (figures_table(required_field(section, "figures", "report['evaluation']"), "report['evaluation'].figures")
            + perplexity_html(section.get("perplexity")))


PATCHING_COLUMNS = {"dataset": "dataset", "k": "k", "neurons": "neurons", "n": "n", "judge": "judge",
                    "harmful_unaligned": "F(U)", "harmful_aligned": "F(A)", "harmful_safety": "F(safety)",
                    "harmful_random": "F(random)", "restore_safety": "R safety", "restore_random": "R random",
                    "degenerate_safety": "degenerate % (safety)", "degenerate_random": "degenerate % (random)",
                    "perplexity_safety": "perplexity (safety)", "perplexity_random": "perplexity (random)"}


def patching_html(section: Mapping) -> str:
    """One row per restore point (dataset, k), with the McNemar p-value of safety against random."""
    points = required_field(section, "points", "report['patching']")
    rows = [[p.get(c) for c in PATCHING_COLUMNS] + [(p.get("safety_vs_random") or {}).get("p_value")]
            for p in points]
    note = f'<p class="note">{esc(section.get("definition", ""))}</p>\n' if section.get("definition") else ""
    headers = list(PATCHING_COLUMNS.values()) + ["p (safety vs random)"]
    return note + table(headers, rows) + perplexity_html(section.get("perplexity"))


def perplexity_html(perplexity: Mapping | None) -> str:
    """Perplexity per condition (before/after, patched/unpatched), with the text it was measured on."""
    if not perplexity:
        return ""
    rows = [(name, v.get("perplexity"), v.get("neurons"), v.get("texts"), v.get("tokens"))
            for name, v in perplexity.items() if isinstance(v, Mapping)]
    text = ", ".join(f"{k}: {perplexity[k]}" for k in ("dataset", "text") if k in perplexity)
    return table(("condition", "perplexity", "neurons", "texts", "tokens"), rows, f"Perplexity ({text})" if text else
                 "Perplexity")


def safeguard_html(section: Mapping) -> str:
    """Probe accuracy and F1 per neuron selection and dataset."""
    rows = [(selection, dataset, m.get("accuracy"), m.get("f1"), m.get("n"), m.get("positives"))
            for selection, by_dataset in section.items() if selection != "train" and isinstance(by_dataset, Mapping)
            for dataset, m in by_dataset.items() if isinstance(m, Mapping) and "accuracy" in m]
    if not rows:
        raise ValueError("report['safeguard']: no selection holds per-dataset 'accuracy' figures")
    train = section.get("train") or {}
    note = (f"Probe on {section.get('k', '?')} neurons; label: {section.get('label', '?')}; judge: "
            f"{section.get('judge', '?')}; trained on {fmt(train.get('datasets'))} (n = {train.get('n', '?')}).")
    headers = ("neurons", "dataset", "accuracy", "F1", "n", "positives")
    return f'<p class="note">{esc(note)}</p>\n' + table(headers, rows)


RUN_COLUMNS = ("method", "n_docs", "steps", "trained_entries", "trained_fraction", "optimizer_state_bytes",
               "final_loss")


def sntune_html(section: Mapping) -> str:
    """PLND counts, tuning runs, before/after figures, deactivation figures and perplexity."""
    parts = [plnd_counts_html(section.get("neurons") or {})]
    tuning = section.get("tuning") or {}
    runs = tuning.get("runs") or {}
    if runs:
        parts.append("<h3>SN-Tune and RSN-Tune runs</h3>\n" + table(
            ("run",) + RUN_COLUMNS, ([name] + [run.get(c) for c in RUN_COLUMNS] for name, run in runs.items())))
    if tuning.get("figures"):
        parts.append("<h3>Before and after tuning</h3>\n" + figures_table(tuning["figures"],
                                                                           "report['sntune'].tuning.figures"))
    deactivation = section.get("deactivation") or {}
    if deactivation.get("figures"):
        note = deactivation.get("random_seed_note")
        parts.append("<h3>Deactivation</h3>\n" + (f'<p class="note">{esc(note)}</p>\n' if note else "")
                     + figures_table(deactivation["figures"], "report['sntune'].deactivation.figures")
                     + perplexity_html(deactivation.get("perplexity")))
    parts.append(perplexity_html(section.get("perplexity")))
    return "".join(parts)


def plnd_counts_html(neurons: Mapping) -> str:
    """PLND neuron counts per set and module."""
    if not neurons:
        return ""
    modules = sorted({m for counts in neurons.values() for m in (counts.get("per_module") or {})})
    rows = [[name, counts.get("total")] + [(counts.get("per_module") or {}).get(m) for m in modules]
            for name, counts in neurons.items()]
    return "<h3>PLND neurons</h3>\n" + table(["set", "total"] + modules, rows)


def nlsr_html(section: Mapping) -> str:
    """One row per NLSR variant (aligned, reference, attacked(p), realigned(p)), one column per figure."""
    variants = required_field(section, "variants", "report['nlsr']")
    keys = list(dict.fromkeys(k for v in variants for k in (v.get("figures") or {})))
    rows = [[v.get("variant"), v.get("kind"), v.get("p")]
            + [nlsr_cell((v.get("figures") or {}).get(k)) for k in keys] + [v.get("perplexity")] for v in variants]
    figures = [f for v in variants for f in (v.get("figures") or {}).values()]
    note = (f"Cells: value (95% CI), in %. n = {distinct(figures, 'n')}; judge: {distinct(figures, 'judge')}; "
            f"task rule: {distinct(figures, 'rule')}.")
    params = section.get("params") or {}
    return (f'<p class="note">{esc(note)}</p>\n' + table(["variant", "kind", "p"] + keys + ["perplexity"], rows)
            + ("<h3>Settings</h3>\n" + key_value_table(params) if params else ""))


def nlsr_cell(fig: Mapping | None) -> str | None:
    """'35 (22.13–50.49)' for one NLSR figure."""
    return None if fig is None else f"{fmt(figure_value(fig))} ({fmt_ci(fig.get('ci95'))})"


OVERLAP_COLUMNS = ("a", "b", "module", "k", "jaccard", "jaccard_random", "spearman")


def overlap_html(section: Mapping) -> str:
    """The neuron-set pairs as a table (known columns first, nested per-layer detail left out), and definitions."""
    pairs = section.get("pairs")
    if not pairs:
        return '<p class="missing">The overlap section has no pairs.</p>\n'
    nested = {k for p in pairs for k, v in p.items() if isinstance(v, (list, dict))}
    extra = sorted({k for p in pairs for k in p} - set(OVERLAP_COLUMNS) - nested)
    columns = [c for c in OVERLAP_COLUMNS if any(c in p for p in pairs)] + extra
    definitions = section.get("definitions")
    return table(columns, ([p.get(c) for c in columns] for p in pairs)) + (
        "<h3>Definitions</h3>\n" + key_value_table(definitions) if isinstance(definitions, Mapping) else "")


SECTIONS: tuple[tuple[str, str, Callable[[Mapping], str]], ...] = (
    ("evaluation", "Evaluation table: harmful score and over-refusal", evaluation_html),
    ("patching", "Patching table: restore points", patching_html),
    ("safeguard", "Safeguard table: harmfulness probe on neuron activations", safeguard_html),
    ("sntune", "SN-Tune, RSN-Tune and deactivation tables", sntune_html),
    ("nlsr", "NLSR table per variant", nlsr_html),
    ("overlap", "Overlap table: neuron sets compared", overlap_html),
)


def section_html(report: Mapping, key: str, title: str, render: Callable[[Mapping], str]) -> str:
    """A report section, or a one-line note when the report lacks it."""
    body = (render(report[key]) if isinstance(report.get(key), Mapping) and report[key]
            else f'<p class="missing">No {esc(key)} section in this report.</p>\n')
    return f'<section id="sec-{key}">\n<h2>{esc(title)}</h2>\n{body}</section>\n'


def figures_html(report: Mapping, plots: Mapping) -> str:
    """Every plot, in reading order, with its caption."""
    if not plots:
        return '<section id="figures">\n<h2>Figures</h2>\n<p class="missing">No plots were given.</p>\n</section>\n'
    figures = [figure_html(i, name, plots[name], CAPTIONS.get(name, lambda r: "")(report))
               for i, name in enumerate(ordered_plot_names(plots), start=1)]
    return '<section id="figures">\n<h2>Figures</h2>\n' + "".join(figures) + "</section>\n"


def contents_html(plots: Mapping) -> str:
    """In-page links to the figures and sections."""
    links = [(f"fig-{n}", PLOT_TITLES.get(n, n)) for n in ordered_plot_names(plots) if PLOT_NAME.match(n)]
    links += [("sec-variants", "Variants table")] + [(f"sec-{key}", title) for key, title, _ in SECTIONS]
    items = "".join(f'<li><a href="#{anchor}">{esc(text)}</a></li>' for anchor, text in links)
    return f"<nav><ul>{items}</ul></nav>\n"


def render_html(report: Mapping, plots: Mapping[str, str | os.PathLike]) -> str:
    """The whole page as text (write_html_report writes it)."""
    model = required_field(report, "model", "report")
    version = report.get("neuronkit_version", "unknown")
    variants = report.get("variants") or {}
    variants_body = variants_html(variants) if variants else '<p class="missing">No variants in this report.</p>\n'
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Safety-neuron report: {esc(model)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>Safety-neuron report: {esc(model)}</h1>\n<p class=\"meta\">neuronkit {esc(version)}</p>\n"
            + contents_html(plots) + figures_html(report, plots)
            + f'<section id="sec-variants">\n<h2>Variants table</h2>\n{variants_body}</section>\n'
            + "".join(section_html(report, key, title, render) for key, title, render in SECTIONS)
            + "</body>\n</html>\n")


def write_html_report(report: Mapping, plots: Mapping[str, str | os.PathLike], out_html: str | os.PathLike) -> None:
    """One self-contained HTML file for the report (atomic write, same inputs give the same bytes)."""
    from .atomic import write_text

    write_text(render_html(report, plots), out_html)
