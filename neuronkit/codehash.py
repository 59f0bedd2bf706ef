"""Which neuronkit files a workflow script can run, so that a rule reruns exactly when one of them changes.

A rule's ``code`` parameter is the hash of every ``neuronkit`` source file its script imports, followed through
every import of those files (function-level imports included, and the packages' ``__init__.py`` files that an
import runs). It is derived from the code, so it cannot drift from what the script uses. It is module-granular:
editing a module reruns every rule that can import it, even when the rule calls none of the edited functions.
A module that reads a file of the package at run time (a template) names it in a top-level ``DATA_FILES`` tuple of
paths relative to the package; those files are hashed with the module.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "neuronkit"
DATA_FILES = "DATA_FILES"


def module_file(name: str, root: Path) -> Path | None:
    """The source file of a dotted ``neuronkit`` module under ``root`` (the repo), or None when there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path) -> str | None:
    """The dotted name of a file inside the package (``neuronkit.scores.plnd``), None for a file outside it."""
    rel = path.resolve().relative_to(root.resolve()) if path.resolve().is_relative_to(root.resolve()) else None
    if rel is None or rel.parts[0] != PACKAGE:
        return None
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, this: str | None, is_package: bool) -> str | None:
    """The module an ``from ... import`` names, with relative imports resolved against the importing module."""
    if node.level == 0:
        return node.module
    if this is None:
        return None
    package = this.split(".") if is_package else this.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def direct_imports(path: Path, root: Path) -> frozenset[str]:
    """``neuronkit`` modules one file imports anywhere (top level or inside functions), parents included."""
    stat = path.stat()
    return _direct_imports(path, root, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _direct_imports(path: Path, root: Path, _mtime_ns: int, _size: int) -> frozenset[str]:
    """``direct_imports``, parsed once per version of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this, is_package = module_name(path, root), path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, this, is_package)
            if base:
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # "from . import manifest"
    modules = {m for m in found if module_file(m, root)}
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    modules |= {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}
    return frozenset(modules)


def declared_data_files(path: Path, root: Path) -> list[Path]:
    """The package files a module says it reads (its top-level ``DATA_FILES`` tuple of string literals)."""
    stat = path.stat()
    return list(_declared_data_files(path, root, stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=None)
def _declared_data_files(path: Path, root: Path, _mtime_ns: int, _size: int) -> tuple[Path, ...]:
    """``declared_data_files``, parsed once per version of the file (every rule's closure shares most modules)."""
    text = path.read_text(encoding="utf-8")
    if DATA_FILES not in text:
        return ()
    tree = ast.parse(text, filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == DATA_FILES for t in node.targets):
            names = ast.literal_eval(node.value)
            files = [root / PACKAGE / name for name in names]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{path}: {DATA_FILES} names files that do not exist: {missing}")
            return tuple(files)
    return ()


def import_closure(script: Path, root: Path) -> list[Path]:
    """Every ``neuronkit`` file ``script`` can run through imports, and the data files they declare, sorted."""
    seen: set[str] = set()
    todo = list(direct_imports(script.resolve(), root.resolve()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(direct_imports(module_file(name, root.resolve()), root.resolve()) - seen)
    modules = [module_file(name, root.resolve()) for name in seen]
    data = {f for m in modules for f in declared_data_files(m, root.resolve())}
    return sorted(set(modules) | data)


def script_code_hash(script: Path, root: Path) -> str:
    """Hash of the files in ``import_closure``: their paths (relative to ``root``) and contents."""
    digest = hashlib.sha256()
    for path in import_closure(script, root):
        digest.update(path.relative_to(root.resolve()).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
