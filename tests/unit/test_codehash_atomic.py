"""Rule code hashes derived from imports, and atomic artifact writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neuronkit.atomic import atomic_dir, atomic_file, write_json
from neuronkit.codehash import import_closure, script_code_hash
from tests.conftest import REPO


def _package(root: Path) -> Path:
    """A small fake package: a script -> a (relative, top-level) -> b (lazy, inside a function) -> sub/c."""
    pkg = root / "neuronkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from .sub import c\n    return c\n")
    (pkg / "sub" / "c.py").write_text("from .. import d\n")
    (pkg / "d.py").write_text("X = 1\n")
    (pkg / "unused.py").write_text("import os\n")
    script = root / "workflow_scripts" / "job.py"
    script.parent.mkdir()
    script.write_text("import sys\nfrom neuronkit.a import thing\n")
    return script


def test_the_closure_follows_relative_lazy_and_parent_imports(tmp_path):
    script = _package(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in import_closure(script, tmp_path)]
    assert names == ["neuronkit/__init__.py", "neuronkit/a.py", "neuronkit/b.py", "neuronkit/d.py",
                     "neuronkit/sub/__init__.py", "neuronkit/sub/c.py"]


def test_the_hash_changes_with_a_deep_module_and_not_with_an_unused_one(tmp_path):
    script = _package(tmp_path)
    before = script_code_hash(script, tmp_path)
    (tmp_path / "neuronkit" / "unused.py").write_text("import os\n# edited\n")
    assert script_code_hash(script, tmp_path) == before
    (tmp_path / "neuronkit" / "d.py").write_text("X = 2\n")
    assert script_code_hash(script, tmp_path) != before


def test_a_declared_template_is_hashed_with_its_module(tmp_path):
    script = _package(tmp_path)
    (tmp_path / "neuronkit" / "templates").mkdir()
    (tmp_path / "neuronkit" / "templates" / "page.j2").write_text("<p>{{ x }}</p>\n")
    (tmp_path / "neuronkit" / "d.py").write_text('X = 1\nDATA_FILES = ("templates/page.j2",)\n')
    assert tmp_path / "neuronkit" / "templates" / "page.j2" in import_closure(script, tmp_path)
    before = script_code_hash(script, tmp_path)
    (tmp_path / "neuronkit" / "templates" / "page.j2").write_text("<p>{{ x }}!</p>\n")
    assert script_code_hash(script, tmp_path) != before
    (tmp_path / "neuronkit" / "d.py").write_text('DATA_FILES = ("templates/gone.j2",)\n')
    with pytest.raises(FileNotFoundError, match="gone.j2"):
        import_closure(script, tmp_path)


def test_the_html_report_rule_hashes_its_template():
    names = {p.name for p in import_closure(REPO / "workflow_scripts" / "html_report.py", REPO)}
    assert {"html_report.py", "report.html.j2"} <= names


def test_every_rule_hashes_the_script_it_runs():
    """The only hand-written part, the script name in ``script_code("x")``, must be the rule's own script."""
    rules = 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=rule )", smk.read_text())[1:]:
            name = block.split(":", 1)[0].split()[1]
            script = re.search(r'script:\n\s+"\.\./workflow_scripts/(\w+)\.py"', block)
            code = re.findall(r'code=script_code\("(\w+)"\)', block)
            assert script and code == [script.group(1)], f"{smk.name}: rule {name}"
            rules += 1
    assert rules >= 30


def test_the_real_scripts_see_the_modules_they_import_lazily():
    names = {p.name for p in import_closure(REPO / "workflow_scripts" / "sntune.py", REPO)}
    assert {"sntune.py", "alignment_data.py", "builtin_data.py", "runtime.py"} <= names  # refusals via alignment_data
    data = {p.name for p in import_closure(REPO / "workflow_scripts" / "prepare_dataset.py", REPO)}
    assert {"data.py", "builtin_data.py", "task.py"} <= data and "models.py" not in data


def test_atomic_file_leaves_the_old_file_and_no_temporary_on_error(tmp_path):
    target = tmp_path / "out" / "x.json"
    write_json({"a": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n' and sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_atomic_dir_replaces_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights.bin").write_text("new")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"] and (target / "stale.bin").exists()
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_the_workflow_loads_its_config_without_torch_or_transformers():
    """Snakemake imports these on every invocation (a no-op rerun too): keeping torch out saves seconds of planning."""
    import subprocess
    import sys

    code = ("import sys; from neuronkit.config import load_config_files; import neuronkit.alignment_data, "
            "neuronkit.codehash, neuronkit.data, neuronkit.modelspec; load_config_files(['config.yaml']); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
