"""Write envs/*.yaml from requirements.lock, so the conda envs pin exactly what the lock pins.

Each rule family lists its direct dependencies here; its env pins those and everything they pull in
(read from the lock's ``# via`` annotations), at the lock's versions. torch comes from conda
(``pytorch``, which picks the CUDA build on GPU nodes), so what only torch needs is left to conda.

    python tools/envs_from_lock.py          # rewrite envs/*.yaml (run by `make lock`)
    python tools/envs_from_lock.py --check  # exit 1 if an env differs from what the lock gives
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
ENVS = REPO / "envs"
PYTHON = "3.11"


@dataclass(frozen=True)
class Family:
    """One conda env: the rules that use it, and the packages its scripts import."""

    purpose: str
    direct: tuple[str, ...]
    torch: bool


FAMILIES = {
    "data": Family(
        "prepare_dataset: dataset specs (local files, builtins, hub ids) to the common Parquet schema.",
        ("pyarrow", "pandas", "numpy", "datasets", "pyyaml"), torch=False),
    "model": Family(
        "Rules that load or train a model (generation, training, neuron scoring, patching, NLSR, lm-eval).",
        ("transformers", "peft", "trl", "safetensors", "pyarrow", "pandas", "numpy", "datasets", "gguf", "pyyaml",
         "tqdm", "scipy", "scikit-learn", "lm-eval"), torch=True),
    "report": Family(
        "Report rules: sections, plots, overlap and the HTML report. No model stack (transformers, peft,\n"
        "# trl); torch only for reading neuron indices and masks.",
        ("safetensors", "pyarrow", "pandas", "numpy", "matplotlib", "pyyaml", "scipy", "jinja2", "pillow"),
        torch=True),
}


def normalise(name: str) -> str:
    """PEP 503 name, as the lock and pip compare them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> tuple[dict[str, str], dict[str, set[str]]]:
    """``name -> version`` and ``name -> the packages that need it`` from a uv/pip-compile lock."""
    versions: dict[str, str] = {}
    needed_by: dict[str, set[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if pin:
            current = normalise(pin.group(1))
            versions[current] = pin.group(2)
            needed_by[current] = set()
            continue
        via = re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s|$)", line)
        if current and via and via.group(1) != "via":
            needed_by[current].add(normalise(via.group(1)))
    return versions, needed_by


def closure(roots: tuple[str, ...], needed_by: dict[str, set[str]], stop: set[str]) -> set[str]:
    """The roots and everything they pull in, not walking past ``stop`` (packages conda provides)."""
    needs: dict[str, set[str]] = {}
    for child, parents in needed_by.items():
        for parent in parents:
            needs.setdefault(parent, set()).add(child)
    seen, todo = set(), [normalise(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        todo.extend(needs.get(name, ()))
    return seen


def env_text(name: str, family: Family, versions: dict[str, str], needed_by: dict[str, set[str]]) -> str:
    """The YAML of one family's env (written by hand: stdlib only, stable order)."""
    missing = [d for d in family.direct if normalise(d) not in versions]
    if missing:
        raise SystemExit(f"{LOCK.name} has no pin for {', '.join(missing)} (needed by envs/{name}.yaml)")
    packages = sorted(closure(family.direct, needed_by, stop={"torch"}))
    lines = [
        f"# {family.purpose}",
        "# Generated from requirements.lock by tools/envs_from_lock.py (`make lock`); do not edit by hand.",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
    ]
    if family.torch:
        lines.append(f"  - pytorch=={versions['torch'].split('+')[0]}")
    lines.append("  - pip:")
    lines += [f"      - {p}=={versions[p]}" for p in packages]
    return "\n".join(lines) + "\n"


def expected_envs() -> dict[Path, str]:
    versions, needed_by = read_lock()
    return {ENVS / f"{name}.yaml": env_text(name, fam, versions, needed_by) for name, fam in FAMILIES.items()}


def main(argv: list[str]) -> int:
    stale = []
    for path, text in expected_envs().items():
        if path.exists() and path.read_text() == text:
            continue
        if "--check" in argv:
            stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"envs differ from {LOCK.name}: {', '.join(stale)}; run `make lock`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
