"""One self-contained HTML page from report.json and its plots: inline CSS, base64 PNGs, no scripts, no URLs.

The page is meant to be mailed or archived as a single file, so nothing in it loads anything from elsewhere,
and the same inputs give the same bytes (no timestamps, no dict-order surprises beyond the report's own).
The markup is templates/report.html.j2; this module only shapes the report into plain dicts and lists for it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from PIL import Image

from .report import required_field

PLOT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
TEMPLATE = "report.html.j2"
DATA_FILES = ("templates/report.html.j2",)  # hashed into the html_report rule's code (neuronkit.codehash)

PLOT_TITLES = {
    "variant_scores": "Harmful score and over-refusal per variant",
    "restore_curve": "Restore ratio R(k): safety versus random neurons",
    "neurons_per_layer": "Safety neurons per layer",
    "nlsr": "NLSR: harmful fine-tuning and realignment",
    "overlap_heatmap": "Overlap between neuron sets",
}


def escape_html(value) -> Markup:
    """Jinja's finalize: report text escaped as html.escape does (&quot;, &#x27;), keeping the page's bytes stable."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


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


def is_number(value) -> bool:
    """Numbers are right-aligned in tables; booleans are not numbers there."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def environment() -> Environment:
    """The template environment: everything escaped, an unknown name an error, fmt and 'numeric' for tables."""
    env = Environment(loader=PackageLoader("neuronkit", "templates"), autoescape=True, finalize=escape_html,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.tests["numeric"] = is_number
    return env


ENVIRONMENT = environment()


def distinct(items: Iterable[Mapping], key: str) -> str:
    """The distinct values of one field, joined, for captions ('harmful_novel, harmful_test')."""
    values = [item[key] for item in items if isinstance(item, Mapping) and item.get(key) is not None]
    numbers = sorted({v for v in values if is_number(v)})
    others = sorted({fmt(v) for v in values if not is_number(v)})
    return ", ".join([fmt(v) for v in numbers] + others) or "?"


# ---- blocks: the pieces of a section, as the template's block macro takes them ----

def table(headers: Sequence[str], rows: Iterable[Sequence], caption: str | None = None) -> dict:
    """A table of raw cell values (the template formats them and right-aligns numbers)."""
    return {"kind": "table", "headers": list(headers), "rows": [list(row) for row in rows], "caption": caption}


def note(text: str) -> dict:
    """A short explanatory paragraph above a table."""
    return {"kind": "note", "text": text}


def heading(text: str) -> dict:
    """A sub-heading inside a section."""
    return {"kind": "heading", "text": text}


def missing(text: str) -> dict:
    """A one-line note that something the page would show is absent."""
    return {"kind": "missing", "text": text}


def key_value_table(obj: Mapping, keys: Sequence[str] | None = None) -> list[dict]:
    """Scalar settings as a two-column table (no block when there are none)."""
    keys = [k for k in (keys or sorted(obj)) if k in obj and not isinstance(obj[k], Mapping)]
    return [table(("field", "value"), ((k, obj[k]) for k in keys))] if keys else []


def figure_value(fig: Mapping):
    """A rate figure's number: 'value' for judged scores, 'accuracy' for task accuracy."""
    return fig.get("value", fig.get("accuracy"))


def figures_table(figures: Sequence[Mapping], where: str) -> dict:
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


# ---- figures ----

def png_size(data: bytes, origin: str) -> tuple[int, int]:
    """Width and height from Pillow; anything but a readable PNG is refused, since the page embeds image/png."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            is_png, size = img.format == "PNG", img.size
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{origin}: not a PNG file") from error
    if not is_png:
        raise ValueError(f"{origin}: not a PNG file")
    return size


def ordered_plot_names(plots: Mapping) -> list[str]:
    """Known plots in reading order, then any others by name."""
    known = [name for name in PLOT_TITLES if name in plots]
    return known + sorted(set(plots) - set(known))


def figure(number: int, name: str, path, caption: str) -> dict:
    """One figure for the template: the PNG as a base64 data URI at its natural size, its title and caption."""
    if not PLOT_NAME.match(name):
        raise ValueError(f"plot name {name!r}: use letters, digits, '_' or '-' only (it becomes an HTML id)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plot {name!r}: {path} does not exist")
    data = path.read_bytes()
    width, height = png_size(data, f"plot {name!r} ({path})")
    return {"number": number, "name": name, "title": PLOT_TITLES.get(name, name.replace("_", " ")),
            "width": width, "height": height, "caption": caption,
            "src": "data:image/png;base64," + base64.b64encode(data).decode("ascii")}


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
    points = [p for p in patching.get("points") or [] if p.get("metric", "harmful_score") == "harmful_score"]
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


# ---- sections: one function per report section, each giving the section's blocks ----

def variants_blocks(variants: Mapping) -> list[dict]:
    """The variants' lineage, so every table row can be traced to a checkpoint."""
    rows = [(name, v.get("kind"), v.get("method"), v.get("parent"), v.get("source")) for name, v in variants.items()]
    return [table(("variant", "kind", "method", "parent", "source"), rows)]


def evaluation_blocks(section: Mapping) -> list[dict]:
    """Harmful score and over-refusal per variant and dataset, with n and CI; the variants' benign-text perplexity."""
    figures = required_field(section, "figures", "report['evaluation']")
    return [figures_table(figures, "report['evaluation'].figures")] + perplexity_blocks(section.get("perplexity"))


PATCHING_COLUMNS = {"dataset": "dataset", "k": "k", "neurons": "neurons", "n": "n", "judge": "judge",
                    "harmful_unaligned": "F(U)", "harmful_aligned": "F(A)", "harmful_safety": "F(safety)",
                    "harmful_random": "F(random)", "restore_safety": "R safety", "restore_random": "R random",
                    "over_refusal_unaligned": "over-refusal (U)", "over_refusal_aligned": "over-refusal (A)",
                    "over_refusal_safety": "over-refusal (safety)", "over_refusal_random": "over-refusal (random)",
                    "tax_safety": "tax safety", "tax_random": "tax random",
                    "degenerate_safety": "degenerate % (safety)", "degenerate_random": "degenerate % (random)",
                    "perplexity_safety": "perplexity (safety)", "perplexity_random": "perplexity (random)",
                    "change_share_safety": "change share (safety)", "change_share_random": "change share (random)"}


def patching_blocks(section: Mapping) -> list[dict]:
    """One row per restore point (dataset, k), with the McNemar p-value of safety against random."""
    points = required_field(section, "points", "report['patching']")
    columns = [c for c in PATCHING_COLUMNS if any(c in p for p in points)]  # benign sets: over-refusal, no R
    rows = [[p.get(c) for c in columns] + [(p.get("safety_vs_random") or {}).get("p_value")] for p in points]
    headers = [PATCHING_COLUMNS[c] for c in columns] + ["p (safety vs random)"]
    notes = [note(section["definition"])] if section.get("definition") else []
    return notes + [table(headers, rows)] + perplexity_blocks(section.get("perplexity"))


def perplexity_blocks(perplexity: Mapping | None) -> list[dict]:
    """Perplexity per condition (before/after, patched/unpatched), with the text it was measured on."""
    if not perplexity:
        return []
    rows = [(name, v.get("perplexity"), v.get("neurons"), v.get("texts"), v.get("tokens"))
            for name, v in perplexity.items() if isinstance(v, Mapping)]
    text = ", ".join(f"{k}: {perplexity[k]}" for k in ("dataset", "text") if k in perplexity)
    caption = f"Perplexity ({text})" if text else "Perplexity"
    return [table(("condition", "perplexity", "neurons", "texts", "tokens"), rows, caption)]


def safeguard_blocks(section: Mapping) -> list[dict]:
    """Probe accuracy (with its interval) and F1 per neuron selection and dataset, and the paired tests."""
    rows = [(selection, dataset, m.get("accuracy"), fmt_ci(m.get("ci95")), m.get("f1"), m.get("n"), m.get("positives"))
            for selection, by_dataset in section.items() if selection not in ("train", "test", "paired")
            and isinstance(by_dataset, Mapping)
            for dataset, m in by_dataset.items() if isinstance(m, Mapping) and "accuracy" in m]
    if not rows:
        raise ValueError("report['safeguard']: no selection holds per-dataset 'accuracy' figures")
    train = section.get("train") or {}
    text = (f"Probe on {section.get('k', '?')} neurons; label: {section.get('label', '?')}; judge: "
            f"{section.get('judge', '?')}; trained on {fmt(train.get('datasets'))} (n = {train.get('n', '?')}).")
    blocks = [note(text), table(("neurons", "dataset", "accuracy", "95% CI", "F1", "n", "positives"), rows)]
    paired = [(pair, dataset, t.get("only_first"), t.get("only_second"), t.get("p_value"))
              for pair, by_dataset in (section.get("paired") or {}).items() if isinstance(by_dataset, Mapping)
              for dataset, t in by_dataset.items() if isinstance(t, Mapping)]
    if paired:
        blocks.append(table(("probes", "dataset", "right only first", "right only second", "p (exact McNemar)"),
                            paired, "Paired tests on the same prompts"))
    return blocks


RUN_COLUMNS = ("method", "n_docs", "steps", "trained_entries", "trained_fraction", "optimizer_state_bytes",
               "final_loss")


def sntune_blocks(section: Mapping) -> list[dict]:
    """PLND counts, tuning runs, before/after figures, deactivation figures and perplexity."""
    blocks = plnd_counts_blocks(section.get("neurons") or {})
    tuning = section.get("tuning") or {}
    runs = tuning.get("runs") or {}
    if runs:
        rows = ([name] + [run.get(c) for c in RUN_COLUMNS] for name, run in runs.items())
        blocks += [heading("SN-Tune and RSN-Tune runs"), table(("run",) + RUN_COLUMNS, rows)]
    if tuning.get("figures"):
        blocks += [heading("Before and after tuning"),
                   figures_table(tuning["figures"], "report['sntune'].tuning.figures")]
    blocks += deactivation_blocks(section.get("deactivation") or {})
    return blocks + perplexity_blocks(section.get("perplexity"))


def deactivation_blocks(deactivation: Mapping) -> list[dict]:
    """Figures and perplexity with neuron sets zeroed (nothing when no figures were measured)."""
    if not deactivation.get("figures"):
        return []
    seed_note = deactivation.get("random_seed_note")
    return ([heading("Deactivation")] + ([note(seed_note)] if seed_note else [])
            + [figures_table(deactivation["figures"], "report['sntune'].deactivation.figures")]
            + paired_blocks(deactivation.get("paired") or [], DEACTIVATION_PAIRED_COLUMNS,
                            "Safety neurons against each control (same prompts, exact McNemar)")
            + perplexity_blocks(deactivation.get("perplexity")))


DEACTIVATION_PAIRED_COLUMNS = ("dataset", "first", "second", "flag", "n", "first_percent", "second_percent",
                               "only_first", "only_second", "p_value", "significant")


def plnd_counts_blocks(neurons: Mapping) -> list[dict]:
    """PLND neuron counts per set and module."""
    if not neurons:
        return []
    modules = sorted({m for counts in neurons.values() for m in (counts.get("per_module") or {})})
    rows = [[name, counts.get("total")] + [(counts.get("per_module") or {}).get(m) for m in modules]
            for name, counts in neurons.items()]
    return [heading("PLND neurons"), table(["set", "total"] + modules, rows)]


def nlsr_blocks(section: Mapping) -> list[dict]:
    """One row per NLSR variant (aligned, reference, attacked(p), realigned(p)), one column per figure."""
    variants = required_field(section, "variants", "report['nlsr']")
    keys = list(dict.fromkeys(k for v in variants for k in (v.get("figures") or {})))
    rows = [[v.get("variant"), v.get("kind"), v.get("p")]
            + [nlsr_cell((v.get("figures") or {}).get(k)) for k in keys] + [v.get("perplexity")] for v in variants]
    figures = [f for v in variants for f in (v.get("figures") or {}).values()]
    text = (f"Cells: value (95% CI), in %. n = {distinct(figures, 'n')}; judge: {distinct(figures, 'judge')}; "
            f"task rule: {distinct(figures, 'rule')}.")
    params = section.get("params") or {}
    settings = [heading("Settings")] + key_value_table(params) if params else []
    definitions = section.get("definitions")
    glossary = [heading("Definitions")] + key_value_table(definitions) if isinstance(definitions, Mapping) else []
    return ([note(text), table(["variant", "kind", "p"] + keys + ["perplexity"], rows)]
            + paired_blocks(section.get("paired") or []) + glossary + settings)


PAIRED_COLUMNS = ("dataset", "p", "first", "second", "flag", "n", "first_percent", "second_percent", "only_first",
                  "only_second", "p_value", "significant")


def paired_blocks(paired: Sequence[Mapping], columns: Sequence[str] = PAIRED_COLUMNS,
                  title: str = "Paired tests (same prompts, exact McNemar)") -> list[dict]:
    """Variants compared prompt by prompt (exact McNemar): NLSR against its baselines, deactivation against its
    controls, general ability against the reference; nothing when no test was run."""
    if not paired:
        return []
    return [heading(title), table(list(columns), ([t.get(c) for c in columns] for t in paired))]


def nlsr_cell(fig: Mapping | None) -> str | None:
    """'35 (22.13–50.49)' for one NLSR figure."""
    return None if fig is None else f"{fmt(figure_value(fig))} ({fmt_ci(fig.get('ci95'))})"


OVERLAP_COLUMNS = ("a", "b", "module", "k", "jaccard", "jaccard_random", "spearman")


def overlap_blocks(section: Mapping) -> list[dict]:
    """The neuron-set pairs as a table (known columns first, nested per-layer detail left out), and definitions."""
    pairs = section.get("pairs")
    if not pairs:
        return [missing("The overlap section has no pairs.")]
    nested = {k for p in pairs for k, v in p.items() if isinstance(v, (list, dict))}
    extra = sorted({k for p in pairs for k in p} - set(OVERLAP_COLUMNS) - nested)
    columns = [c for c in OVERLAP_COLUMNS if any(c in p for p in pairs)] + extra
    definitions = section.get("definitions")
    glossary = [heading("Definitions")] + key_value_table(definitions) if isinstance(definitions, Mapping) else []
    return [table(columns, ([p.get(c) for c in columns] for p in pairs))] + glossary


GENERAL_PAIRED_COLUMNS = ("dataset", "first", "second", "n", "first_percent", "second_percent", "only_first",
                          "only_second", "p_value", "significant")


def general_blocks(section: Mapping) -> list[dict]:
    """Accuracy per variant and task (lm-eval), then each variant against the reference on the same documents."""
    figures = required_field(section, "figures", "report['general']")
    text = (f"lm-evaluation-harness {section.get('lm_eval_version')}; reference of the paired tests: "
            f"{section.get('reference_variant')}.")
    tests = paired_blocks(section.get("paired") or [], GENERAL_PAIRED_COLUMNS,
                          "Paired tests against the reference (same documents, exact McNemar)")
    local = section.get("local_tasks")
    tasks = [heading("Local tasks")] + key_value_table(local) if isinstance(local, Mapping) and local else []
    return [note(text), figures_table(figures, "report['general']['figures']")] + tests + tasks


SECTIONS: tuple[tuple[str, str, Callable[[Mapping], list[dict]]], ...] = (
    ("evaluation", "Evaluation table: harmful score and over-refusal", evaluation_blocks),
    ("patching", "Patching table: restore points", patching_blocks),
    ("safeguard", "Safeguard table: harmfulness probe on neuron activations", safeguard_blocks),
    ("sntune", "SN-Tune, RSN-Tune and deactivation tables", sntune_blocks),
    ("nlsr", "NLSR table per variant", nlsr_blocks),
    ("overlap", "Overlap table: neuron sets compared", overlap_blocks),
    ("general", "General ability table: lm-eval accuracy per variant", general_blocks),
)


# ---- the page ----

def section(report: Mapping, key: str, title: str, shape: Callable[[Mapping], list[dict]]) -> dict:
    """A report section, or a one-line note when the report lacks it."""
    present = isinstance(report.get(key), Mapping) and report[key]
    blocks = shape(report[key]) if present else [missing(f"No {key} section in this report.")]
    return {"key": key, "title": title, "blocks": blocks}


def variants_section(report: Mapping) -> dict:
    """The variants table comes first among the sections, and is never an error when absent."""
    variants = report.get("variants") or {}
    blocks = variants_blocks(variants) if variants else [missing("No variants in this report.")]
    return {"key": "variants", "title": "Variants table", "blocks": blocks}


def figures(report: Mapping, plots: Mapping) -> list[dict]:
    """Every plot, in reading order, with its caption."""
    return [figure(i, name, plots[name], CAPTIONS.get(name, lambda r: "")(report))
            for i, name in enumerate(ordered_plot_names(plots), start=1)]


def contents(plots: Mapping) -> list[dict]:
    """In-page links to the figures and sections."""
    links = [(f"fig-{n}", PLOT_TITLES.get(n, n)) for n in ordered_plot_names(plots) if PLOT_NAME.match(n)]
    links += [("sec-variants", "Variants table")] + [(f"sec-{key}", title) for key, title, _ in SECTIONS]
    return [{"anchor": anchor, "text": text} for anchor, text in links]


def page_context(report: Mapping, plots: Mapping) -> dict:
    """Everything the template shows, checked in page order (so the first problem on the page is the one named)."""
    model = required_field(report, "model", "report")
    return {"model": model, "version": report.get("neuronkit_version", "unknown"), "contents": contents(plots),
            "figures": figures(report, plots),
            "sections": [variants_section(report)] + [section(report, *entry) for entry in SECTIONS]}


def render_html(report: Mapping, plots: Mapping[str, str | os.PathLike]) -> str:
    """The whole page as text (write_html_report writes it)."""
    return ENVIRONMENT.get_template(TEMPLATE).render(page_context(report, plots))


def write_html_report(report: Mapping, plots: Mapping[str, str | os.PathLike], out_html: str | os.PathLike) -> None:
    """One self-contained HTML file for the report (atomic write, same inputs give the same bytes)."""
    from .atomic import write_text

    write_text(render_html(report, plots), out_html)
