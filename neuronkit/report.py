"""Assemble report.json from the stage sections and the variants' manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from . import __version__, manifest


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
        report[name] = json.loads(Path(path).read_text())
    return report


def write_json(obj: dict, path: str | os.PathLike) -> None:
    """Stable, atomic JSON output."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def plot_restore_curve(section: dict, out_png) -> None:
    """R(k) for safety vs random neurons, one line pair per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for dataset in sorted({p["dataset"] for p in section["points"]}):
        pts = sorted((p for p in section["points"] if p["dataset"] == dataset), key=lambda p: p["neurons"])
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
    fig.savefig(out_png, metadata={"Software": None})
    plt.close(fig)


def plot_nlsr(section: dict, out_png) -> None:
    """Harmful score and task accuracy against the poison fraction for attacked and realigned adapters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for kind, style in (("attacked", "-o"), ("nlsr", "-s")):
        pts = sorted((v for v in section["variants"] if v["kind"] == kind), key=lambda v: v["p"])
        harmful = [next((f["value"] for k, f in v["figures"].items() if k.startswith("harmful_score")), None)
                   for v in pts]
        task = [v["figures"].get("task_accuracy", {}).get("accuracy") for v in pts]
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
    fig.savefig(out_png, metadata={"Software": None})
    plt.close(fig)
