"""The conda environments in envs/ agree with pyproject.toml, and every rule names one."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
CONDA_TO_PYPI = {"pytorch": "torch"}
# What the report and data families must not need: the model stack lives in envs/model.yaml only.
MODEL_STACK = ("transformers", "peft", "trl", "gguf")


def pyproject_requirements() -> dict[str, SpecifierSet]:
    """Package name -> version range, from pyproject's runtime dependencies."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d).specifier for d in deps}


def env_requirements(path: Path) -> dict[str, SpecifierSet]:
    """Package name -> version range of one conda env file (conda and pip entries)."""
    doc = yaml.safe_load(path.read_text())
    out = {}
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                req = Requirement(pip_dep)
                out[req.name.lower()] = req.specifier
        elif not dep.startswith(("python", "pip")):
            name, spec = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", dep).groups()
            out[CONDA_TO_PYPI.get(name, name).lower()] = SpecifierSet(spec)
    return out


def test_there_is_an_env_per_rule_family():
    assert {p.stem for p in ENVS} == {"model", "report", "data"}


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_ranges_equal_pyproject(env):
    project = pyproject_requirements()
    pinned = env_requirements(env)
    assert pinned, f"{env.name} pins nothing"
    for name, spec in pinned.items():
        assert name in project, f"{env.name}: {name} is not a dependency in pyproject.toml"
        assert spec == project[name], f"{env.name}: {name}{spec} but pyproject.toml says {name}{project[name]}"


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_python_satisfies_requires_python(env):
    doc = yaml.safe_load(env.read_text())
    python = next(d for d in doc["dependencies"] if isinstance(d, str) and d.startswith("python="))
    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert python.split("=", 1)[1] + ".0" in requires
    assert doc["channels"] == ["conda-forge"]


def test_model_env_has_every_runtime_dependency_but_the_workflow_engine():
    missing = set(pyproject_requirements()) - set(env_requirements(REPO / "envs" / "model.yaml"))
    # the engine and the config checks run outside jobs; plots are drawn by report rules only
    assert missing == {"snakemake", "jsonschema", "matplotlib"}, missing


def test_every_rule_names_an_existing_env():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, re.M)
        envs = re.findall(r'^    conda:\n        "\.\./envs/(\w+)\.yaml"', text, re.M)
        assert len(envs) == len(rules), f"{smk.name}: {len(rules)} rules but {len(envs)} conda directives"
        assert all((REPO / "envs" / f"{e}.yaml").exists() for e in envs), envs


def _family_modules(family: str) -> set[str]:
    """neuronkit modules imported by the scripts of the rules that use one env family."""
    mods = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            if f'"../envs/{family}.yaml"' not in block:
                continue
            script = re.search(r'"\.\./(workflow_scripts/\w+\.py)"', block).group(1)
            mods |= set(re.findall(r"^from (neuronkit[\w.]*) import", (REPO / script).read_text(), re.M))
    return mods


@pytest.mark.parametrize("family,blocked", [("report", MODEL_STACK + ("datasets",)), ("data", MODEL_STACK + ("torch",))])
def test_light_families_import_without_the_model_stack(family, blocked):
    mods = sorted(_family_modules(family))
    assert mods, f"no scripts found for the {family} family"
    code = (
        "import sys\n"
        f"class Block:\n"
        f"    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        + "".join(f"import {m}\n" for m in mods)
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"{family} scripts need a package their env lacks:\n{proc.stderr[-2000:]}"
