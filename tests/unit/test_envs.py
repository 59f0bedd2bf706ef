"""requirements.lock pins everything inside pyproject's ranges; envs/ are made from the lock; every rule names one."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
CONDA_TO_PYPI = {"pytorch": "torch"}
_spec = importlib.util.spec_from_file_location("envs_from_lock", REPO / "tools" / "envs_from_lock.py")
envs_from_lock = importlib.util.module_from_spec(_spec)
sys.modules["envs_from_lock"] = envs_from_lock  # dataclasses look their module up while the class is made
_spec.loader.exec_module(envs_from_lock)
# What the report and data families must not need: the model stack lives in envs/model.yaml only.
MODEL_STACK = ("transformers", "peft", "trl", "gguf")


def pyproject_requirements(extra: str | None = None) -> dict[str, SpecifierSet]:
    """Package name -> version range, from pyproject's runtime dependencies (or one extra's)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {canonicalize_name(Requirement(d).name): Requirement(d).specifier for d in deps}


def locked() -> dict[str, str]:
    """Package name -> exact version, from requirements.lock."""
    return envs_from_lock.read_lock()[0]


def env_requirements(path: Path) -> dict[str, SpecifierSet]:
    """Package name -> version spec of one conda env file (conda and pip entries)."""
    doc = yaml.safe_load(path.read_text())
    out = {}
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                req = Requirement(pip_dep)
                out[canonicalize_name(req.name)] = req.specifier
        elif not dep.startswith(("python", "pip")):
            name, spec = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", dep).groups()
            out[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(spec)
    return out


def test_there_is_an_env_per_rule_family():
    assert {p.stem for p in ENVS} == {"model", "report", "data"} == set(envs_from_lock.FAMILIES)


def test_the_lock_pins_every_dependency_inside_pyproject_ranges():
    pins = locked()
    for extra in (None, "test"):
        for name, spec in pyproject_requirements(extra).items():
            assert name in pins, f"requirements.lock has no pin for {name} (pyproject.toml, extra={extra})"
            assert Version(pins[name]) in spec, f"requirements.lock pins {name}=={pins[name]}, outside {spec}"


def test_the_lock_holds_no_cuda_packages():
    """Locked from the CPU torch wheel: a CPU install never pulls gigabytes of CUDA wheels."""
    assert not [p for p in locked() if p.startswith(("nvidia-", "triton"))]
    assert Version(locked()["torch"]).local == "cpu"


def test_the_running_environment_is_the_lock():
    """What the tests run on is what the lock says (torch: its version, whatever its build)."""
    differ = {}
    for name, version in locked().items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            differ[name] = (version, None)
            continue
        if name == "torch":
            have, version = Version(have).public, Version(version).public
        if Version(have) != Version(version):
            differ[name] = (version, have)
    assert not differ, f"installed packages differ from requirements.lock (locked, installed): {differ}"


def test_envs_are_generated_from_the_lock():
    for path, text in envs_from_lock.expected_envs().items():
        assert path.read_text() == text, f"{path.name} differs from requirements.lock; run `make lock`"


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_pins_equal_the_lock(env):
    pins = locked()
    pinned = env_requirements(env)
    assert pinned, f"{env.name} pins nothing"
    for name, spec in pinned.items():
        assert name in pins, f"{env.name}: {name} is not in requirements.lock"
        want = Version(pins[name]).public if name == "torch" else pins[name]
        assert str(spec) == f"=={want}", f"{env.name}: {name}{spec} but requirements.lock says {name}=={want}"


def test_env_families_close_over_their_dependencies():
    """An env holds what its packages pull in: the closure walk follows the lock's annotations."""
    _, needed_by = envs_from_lock.read_lock()
    assert "huggingface-hub" in envs_from_lock.closure(("transformers",), needed_by, stop={"torch"})
    assert "sympy" not in envs_from_lock.closure(("peft",), needed_by, stop={"torch"})  # torch's, from conda
    data = env_requirements(REPO / "envs" / "data.yaml")
    assert "huggingface-hub" in data and "torch" not in data


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_python_satisfies_requires_python(env):
    doc = yaml.safe_load(env.read_text())
    python = next(d for d in doc["dependencies"] if isinstance(d, str) and d.startswith("python="))
    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert python.split("=", 1)[1] + ".0" in requires
    assert doc["channels"] == ["conda-forge"]


def test_model_env_has_every_runtime_dependency_but_the_workflow_engine():
    missing = set(pyproject_requirements()) - set(env_requirements(REPO / "envs" / "model.yaml"))
    # the engine and the config checks run outside jobs; plots and the HTML page (its image sizes) are report rules
    assert missing == {"snakemake", "jsonschema", "matplotlib", "pillow"}, missing


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
