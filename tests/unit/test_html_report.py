"""The report plots (variant scores, neurons per layer) and the self-contained HTML report writer."""

from __future__ import annotations

import base64
import copy
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from neuronkit.html_report import write_html_report
from neuronkit.report import (neurons_per_layer_panels, plot_neurons_per_layer, plot_nlsr, plot_restore_curve,
                              plot_variant_scores, variant_score_bars)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_NAMES = ("variant_scores", "restore_curve", "neurons_per_layer", "nlsr", "overlap_heatmap")


# ---- a small synthetic report (also used by tests/integration/test_html_report.py) ----

def score(variant: str, metric: str, dataset: str, value: float, n: int = 20) -> dict:
    """One judged figure, shaped like evaluate.score_table's."""
    return {"variant": variant, "metric": metric, "dataset": dataset, "value": value, "n": n, "unit": "%",
            "k": round(value * n / 100), "ci95": [max(value - 12.5, 0.0), min(value + 12.5, 100.0)],
            "judge": "refusal_matcher"}


def plnd_counts(per_layer: dict[str, list[int]]) -> dict:
    """A PLND neuron-set summary as sntune_section writes it."""
    return {"total": sum(map(sum, per_layer.values())), "per_module": {m: sum(c) for m, c in per_layer.items()},
            "per_layer": per_layer}


def synthetic_report() -> dict:
    """Every section the HTML report knows, with small made-up numbers (4 layers, 2 variants)."""
    evaluation = [score(v, m, d, x) for v, xs in (("base", (80, 70, 5, 0)), ("aligned", (10, 15, 10, 20)))
                  for (m, d), x in zip((("harmful_score", "harmful_test"), ("harmful_score", "harmful_novel"),
                                        ("over_refusal", "benign_test"), ("over_refusal", "benign_novel")), xs)]
    points = [{"dataset": "harmful_test", "k": k, "neurons": n, "n": 20, "judge": "refusal_matcher",
               "harmful_unaligned": 80.0, "harmful_aligned": 10.0, "harmful_safety": 80.0 - 30 * r,
               "harmful_random": 78.0, "restore_safety": r, "restore_random": 0.03,
               "safety_vs_random": {"p_value": 0.0123, "test": "mcnemar_exact"}}
              for k, n, r in (("0.01", 4, 0.2), ("0.05", 8, 0.55), ("0.1", 16, 0.9))]
    nlsr = [{"variant": name, "kind": kind, "p": p, "figures": {
        "harmful_score:harmful_test": score(name, "harmful_score", "harmful_test", h),
        "task_accuracy": {"accuracy": acc, "ci95": [acc - 5, acc + 5], "n": 50, "rule": "first_word_exact",
                          "metric": "task_accuracy", "k": acc // 2}}}
        for name, kind, p, h, acc in (("aligned", "aligned", None, 10.0, 40.0), ("attacked_p0.1", "attacked", 0.1,
                                      60.0, 90.0), ("attacked_p0.2", "attacked", 0.2, 75.0, 88.0),
                                      ("nlsr_p0.1", "nlsr", 0.1, 20.0, 86.0), ("nlsr_p0.2", "nlsr", 0.2, 30.0, 84.0),
                                      ("nlsr_random_p0.1", "nlsr_random", 0.1, 55.0, 87.0))]
    paired = [{"dataset": "harmful_test", "p": 0.1, "first": "nlsr_p0.1", "second": "nlsr_random_p0.1",
               "flag": "harmful", "n": 40, "first_percent": 20.0, "second_percent": 55.0, "only_first": 1,
               "only_second": 15, "p_value": 0.000519, "significant": True, "test": "mcnemar_exact"}]
    safety = plnd_counts({"mlp": [3, 1, 4, 6], "q": [1, 0, 2, 2]})
    return {
        "model": "tiny", "neuronkit_version": "0.1.0",
        "variants": {"base": {"kind": "full", "method": None, "parent": None, "source": "builtin:tiny"},
                     "aligned": {"kind": "adapter", "method": "dpo", "parent": "../sft", "source": None}},
        "evaluation": {"figures": evaluation},
        "neurons": {"contrast": {"method": "contrast", "top_k": 12, "top_fraction": 0.05,
                                 "top_per_layer": {"mlp": [0, 1, 3, 8]},
                                 "meta": {"dataset": "harmful_train", "prompts": 8, "tokens": 64}}},
        "patching": {"metric": "harmful_score", "definition": "R = (F(patched) - F(U)) / (F(A) - F(U))",
                     "variants": {"aligned": "aligned", "unaligned": "base"}, "points": points,
                     "perplexity": {"dataset": "benign_test", "aligned": {"perplexity": 12.5, "texts": 20}}},
        "safeguard": {"k": 12, "judge": "refusal_matcher", "label": "own answer judged harmful",
                      "train": {"datasets": ["harmful_train"], "n": 32, "positives": 16},
                      "safety": {"harmful_test": {"accuracy": 0.8125, "ci95": [0.6, 0.93], "f1": 0.8, "n": 20,
                                                  "positives": 15}},
                      "random": {"harmful_test": {"accuracy": 0.6, "f1": 0.7, "n": 20, "positives": 15}},
                      "paired": {"safety_vs_random": {"harmful_test": {"only_first": 7, "only_second": 3,
                                                                       "p_value": 0.3438}}}},
        "sntune": {"neurons": {"safety": safety, "foundation": plnd_counts({"mlp": [2, 1, 1, 1], "q": [1, 0, 0, 1]}),
                               "rsn": plnd_counts({"mlp": [1, 0, 3, 5], "q": [0, 0, 2, 1]})},
                   "neurons_meta": {"dataset": "harmful_train", "n_docs": 6, "variant": "aligned"},
                   "tuning": {"runs": {"sntune": {"method": "sntune", "n_docs": 5, "steps": 3, "final_loss": 2.5,
                                                  "trained_entries": 640, "trained_fraction": 0.0123}},
                              "figures": [score("sntune", "harmful_score", "harmful_test", 42.5)]},
                   "deactivation": {"figures": [score("deact_safety", "harmful_score", "harmful_test", 55.0)],
                                    "paired": [{"dataset": "harmful_test", "first": "deact_safety",
                                                "second": "deact_magnitude", "flag": "harmful", "n": 40,
                                                "first_percent": 55.0, "second_percent": 50.0, "only_first": 4,
                                                "only_second": 2, "p_value": 0.6875, "significant": False}],
                                    "random_seed_note": "random neurons keep the per-layer counts",
                                    "perplexity": {"text": "benign_test", "intact": {"perplexity": 61.4},
                                                   "safety": {"perplexity": 148000.5, "neurons": 525}}},
                   "perplexity": {"text": "prompt text", "before": {"perplexity": 30.0},
                                  "sntune": {"perplexity": 31.0}}},
        "nlsr": {"variants": nlsr, "paired": paired, "params": {"alpha": 0.9, "n": 50, "p_grid": [0.1, 0.2]}},
        "overlap": {"pairs": [{"a": "contrast", "b": "plnd", "module": "mlp", "k": 12, "jaccard": 0.25,
                               "jaccard_random": 0.02, "spearman": 0.4, "n_common": 3,
                               "per_layer": [{"layer": 0, "k": 3, "jaccard": 0.5}], "tie_broken": {"a": 0}}],
                    "definitions": {"jaccard": "|A & B| / |A | B| of the top-k sets"}},
    }


def plot_overlap_stand_in(pairs: list[dict], out_png) -> None:
    """A small Jaccard heat map standing in for the overlap plot (its real function is built elsewhere)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    grid = [[1.0 if a == b else next((p["jaccard"] for p in pairs if {p["a"], p["b"]} == {a, b}), 0.0)
             for b in names] for a in names]
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_title("Jaccard overlap")
    fig.tight_layout()
    fig.savefig(out_png, metadata={"Software": None})
    plt.close(fig)


def build_plots(report: dict, out_dir: Path) -> dict[str, Path]:
    """Every plot of the HTML report, drawn from the report by the library's plot functions."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {name: out_dir / f"{name}.png" for name in PLOT_NAMES}
    plot_variant_scores(report["evaluation"], plots["variant_scores"])
    plot_restore_curve(report["patching"], plots["restore_curve"])
    plot_neurons_per_layer(report, plots["neurons_per_layer"])
    plot_nlsr(report["nlsr"], plots["nlsr"])
    plot_overlap_stand_in(report["overlap"]["pairs"], plots["overlap_heatmap"])
    return plots


class TagCollector(HTMLParser):
    """Start tags with their attributes, in document order (enough to inspect the page without a browser)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def start_tags(page: str) -> list[tuple[str, dict]]:
    """All start tags of an HTML page."""
    collector = TagCollector()
    collector.feed(page)
    return collector.tags


def images_by_id(page: str) -> dict[str, dict]:
    """The page's <img> elements, keyed by id."""
    return {attrs.get("id"): attrs for tag, attrs in start_tags(page) if tag == "img"}


def png_dimensions(path: Path) -> tuple[int, int]:
    """Width, height from the PNG header."""
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ---- fixtures ----

@pytest.fixture(scope="module")
def report() -> dict:
    return synthetic_report()


@pytest.fixture(scope="module")
def plots(report, tmp_path_factory) -> dict[str, Path]:
    return build_plots(report, tmp_path_factory.mktemp("plots"))


@pytest.fixture(scope="module")
def page(report, plots, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("html") / "report.html"
    write_html_report(report, plots, out)
    return out.read_text(encoding="utf-8")


# ---- plots ----

def test_variant_score_bars_group_by_metric_and_dataset(report):
    variants, panels = variant_score_bars(report["evaluation"])
    assert variants == ["base", "aligned"]
    assert list(panels) == ["harmful_score", "over_refusal"]
    assert list(panels["harmful_score"]) == ["harmful_novel", "harmful_test"]
    assert [f["value"] for f in panels["over_refusal"]["benign_novel"]] == [0, 20]


def test_variant_score_bars_leave_a_gap_for_an_unscored_variant(report):
    section = copy.deepcopy(report["evaluation"])
    section["figures"] = [f for f in section["figures"] if not (f["variant"] == "aligned"
                                                                 and f["dataset"] == "benign_test")]
    _, panels = variant_score_bars(section)
    assert panels["over_refusal"]["benign_test"][1] is None


def test_plot_variant_scores_is_a_deterministic_png(report, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    plot_variant_scores(report["evaluation"], first)
    plot_variant_scores(report["evaluation"], second)
    assert first.read_bytes().startswith(PNG_SIGNATURE)
    assert first.read_bytes() == second.read_bytes()


def test_plot_variant_scores_draws_values_with_ci_error_bars(report, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    closed = []
    monkeypatch.setattr(plt, "close", closed.append)  # keep the figure to inspect what was drawn
    plot_variant_scores(report["evaluation"], tmp_path / "x.png")
    harmful_panel = closed[0].axes[0]
    bars = [c for c in harmful_panel.containers if isinstance(c, BarContainer)]
    assert [[round(p.get_height(), 3) for p in c.patches] for c in bars] == [[70, 15], [80, 10]]  # novel, test
    segments = bars[1].errorbar.lines[2][0].get_segments()
    assert [[round(y, 3) for _, y in s] for s in segments] == [[67.5, 92.5], [0.0, 22.5]]  # harmful_test 95% CI
    assert "refusal_matcher" in harmful_panel.get_title()


def test_plot_variant_scores_names_the_missing_field(report, tmp_path):
    section = copy.deepcopy(report["evaluation"])
    del section["figures"][1]["variant"]
    with pytest.raises(ValueError, match=r"figures\[1\]: missing field 'variant'"):
        plot_variant_scores(section, tmp_path / "x.png")
    with pytest.raises(ValueError, match="'figures'"):
        plot_variant_scores({}, tmp_path / "x.png")


def test_plot_variant_scores_refuses_a_section_without_score_metrics(tmp_path):
    section = {"figures": [dict(score("base", "harmful_score", "x", 1.0), metric="perplexity")]}
    with pytest.raises(ValueError, match="harmful_score"):
        plot_variant_scores(section, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


PLND_TITLES = ["PLND safety", "PLND foundation", "PLND RSN (safety minus foundation)"]


@pytest.mark.parametrize("keep, titles", [
    (("neurons", "sntune"), ["contrast"] + PLND_TITLES),
    (("neurons",), ["contrast"]),
    (("sntune",), PLND_TITLES),
])
def test_neurons_per_layer_plots_the_sections_that_exist(report, keep, titles):
    panels = neurons_per_layer_panels({k: report[k] for k in keep})
    assert [title.split(":")[0] for title, _ in panels] == titles
    if "neurons" in keep:
        assert panels[0][1] == {"mlp": [0, 1, 3, 8]}


def test_neurons_per_layer_without_any_counts_names_both_sources(tmp_path):
    with pytest.raises(ValueError, match=r"top_per_layer.*sntune\.neurons"):
        plot_neurons_per_layer({"evaluation": {}, "neurons": {"contrast": {"top_k": 3}}}, tmp_path / "x.png")


def test_plot_neurons_per_layer_is_deterministic_and_grows_with_panels(report, tmp_path):
    full, again, one = tmp_path / "full.png", tmp_path / "again.png", tmp_path / "one.png"
    plot_neurons_per_layer(report, full)
    plot_neurons_per_layer(report, again)
    plot_neurons_per_layer({"neurons": report["neurons"]}, one)
    assert full.read_bytes() == again.read_bytes()
    assert png_dimensions(full)[1] > 3 * png_dimensions(one)[1]


# ---- HTML writer ----

def test_html_embeds_every_plot_at_its_natural_size(page, plots):
    images = images_by_id(page)
    assert set(images) == {f"plot-{name}" for name in PLOT_NAMES}
    for name, path in plots.items():
        img = images[f"plot-{name}"]
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):]) == path.read_bytes(), name
        assert (int(img["width"]), int(img["height"])) == png_dimensions(path)
    order = [attrs["id"] for tag, attrs in start_tags(page) if tag == "img"]
    assert order == [f"plot-{name}" for name in PLOT_NAMES]


def test_html_is_self_contained(page):
    tags = start_tags(page)
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith(("data:image/png;base64,", "#")), (tag, key, value[:40])
    assert "url(" not in page and "@import" not in page


def test_html_is_deterministic(report, plots, tmp_path):
    write_html_report(report, plots, tmp_path / "a.html")
    write_html_report(copy.deepcopy(report), dict(plots), tmp_path / "b.html")
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()
    assert not (tmp_path / "a.html.tmp").exists()


def test_html_title_names_model_and_version(page):
    assert "<title>Safety-neuron report: tiny</title>" in page
    assert "<h1>Safety-neuron report: tiny</h1>" in page
    assert "neuronkit 0.1.0" in page


def test_html_escapes_report_text(report, plots, tmp_path):
    hostile = copy.deepcopy(report)
    hostile["model"] = "<script>alert(1)</script>"
    hostile["variants"]['a"&<b>'] = {"kind": "<i>x</i>"}
    hostile["overlap"]["pairs"][0]["a"] = "<img src=http://x>"
    write_html_report(hostile, plots, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "<script>" not in page and "<i>x</i>" not in page and "<img src=http" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&quot;&amp;&lt;b&gt;" in page
    assert not [t for t, _ in start_tags(page) if t in ("script", "i")]


def test_missing_sections_get_a_one_line_note(report, tmp_path):
    write_html_report({"model": "tiny", "evaluation": report["evaluation"]}, {}, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    for key in ("patching", "safeguard", "sntune", "nlsr", "overlap"):
        assert f'<p class="missing">No {key} section in this report.</p>' in page
    assert "No evaluation section" not in page
    assert "harmful_novel" in page
    assert "No plots were given." in page


def test_the_nlsr_section_shows_the_random_control_and_its_paired_test(page):
    assert "<td>nlsr_random_p0.1</td>" in page and "Paired tests (same prompts, exact McNemar)" in page
    assert '<td class="num">0.000519</td>' in page


def test_the_deactivation_table_shows_each_control_test(page):
    assert "Safety neurons against each control (same prompts, exact McNemar)" in page
    assert "<td>deact_magnitude</td>" in page and '<td class="num">0.6875</td>' in page


def test_tables_carry_n_ci_and_the_section_figures(page):
    assert "<td>2.5–27.5</td>" in page  # aligned harmful_novel 15 +- 12.5: evaluation CI
    assert '<td class="num">0.0123</td>' in page  # patching McNemar p-value
    assert '<td class="num">0.8125</td><td>0.6–0.93</td>' in page  # safeguard accuracy and its interval
    assert "<td>safety_vs_random</td><td>harmful_test</td>" in page and '<td class="num">0.3438</td>' in page
    assert "<td>deact_safety</td>" in page and "random neurons keep the per-layer counts" in page
    assert "<td class=\"num\">1.48e+05</td><td class=\"num\">525</td>" in page  # safety neurons zeroed
    assert '<td class="num">640</td>' in page  # SN-Tune trained entries
    assert "<td>60 (47.5–72.5)</td>" in page  # NLSR attacked p=0.1 harmful score with CI
    assert '<td class="num">2.5</td>' in page  # SN-Tune final loss


def test_overlap_pairs_become_a_table_with_known_columns_first(page, report, plots, tmp_path):
    section = page.split('<section id="sec-overlap">')[1].split("</section>")[0]
    pairs_table = section.split("</table>")[0]
    headers = [h.split("</th>")[0] for h in pairs_table.split("<th>")[1:]]
    assert headers == ["a", "b", "module", "k", "jaccard", "jaccard_random", "spearman", "n_common"]
    assert "<td>contrast</td><td>plnd</td><td>mlp</td>" in section
    assert "<td>|A &amp; B| / |A | B| of the top-k sets</td>" in section  # definitions, escaped
    without = {k: v for k, v in report.items() if k != "overlap"}
    write_html_report(without, {k: v for k, v in plots.items() if k != "overlap_heatmap"}, tmp_path / "r.html")
    assert '<p class="missing">No overlap section in this report.</p>' in (tmp_path / "r.html").read_text()


def test_captions_name_dataset_n_and_judge(page):
    captions = [c.split("</figcaption>")[0] for c in page.split("<figcaption>")[1:]]
    assert len(captions) == len(PLOT_NAMES)
    scores, restore, per_layer, nlsr, overlap = captions
    assert "harmful_novel, harmful_test" in scores and "n = 20" in scores and "refusal_matcher" in scores
    assert "k = 4, 8, 16 neurons" in restore and "harmful_test" in restore and "n = 20" in restore
    assert "harmful_train (8 prompts" in per_layer and "n = 6 documents" in per_layer
    assert "n = 50" in nlsr and "first_word_exact" in nlsr
    assert "pairs: 1" in overlap


@pytest.mark.parametrize("name, content, error, message", [
    ("variant_scores", None, FileNotFoundError, "plot 'variant_scores'.*does not exist"),
    ("variant_scores", b"GIF89a not a png", ValueError, "plot 'variant_scores'.*not a PNG"),
    ("bad name!", PNG_SIGNATURE + bytes(16), ValueError, "plot name 'bad name!'"),
])
def test_bad_plots_are_named(report, tmp_path, name, content, error, message):
    path = tmp_path / "plot.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        write_html_report(report, {name: path}, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def encoded(image_format: str) -> bytes:
    """A 3x2 white image as Pillow encodes it in the given format."""
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), "white").save(buffer, image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"", b"GIF89a not a png", PNG_SIGNATURE + bytes(16), encoded("JPEG"),
                                     encoded("PNG")[:30]],
                         ids=["empty", "gif-text", "zeroed-header", "jpeg", "truncated-png"])
def test_a_non_png_plot_is_refused_naming_its_file(report, tmp_path, content):
    path = tmp_path / "scores.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"plot 'variant_scores' \({re.escape(str(path))}\): not a PNG file"):
        write_html_report(report, {"variant_scores": path}, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_script_in_a_note_and_a_caption_is_escaped(report, plots, tmp_path):
    hostile = copy.deepcopy(report)
    hostile["patching"]["definition"] = "<script>alert('x')</script>"  # the patching note and the restore caption
    write_html_report(hostile, plots, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page and not [t for t, _ in start_tags(page) if t == "script"]
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert f'<p class="note">{escaped}</p>' in page
    restore = page.split('<figure id="fig-restore_curve">')[1].split("</figcaption>")[0]
    assert restore.endswith(escaped)


def test_a_malformed_section_names_its_missing_field(report, tmp_path):
    broken = dict(report, patching={"metric": "harmful_score"})
    with pytest.raises(ValueError, match=r"report\['patching'\]: missing field 'points'"):
        write_html_report(broken, {}, tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"report: missing field 'model'"):
        write_html_report({}, {}, tmp_path / "r.html")
