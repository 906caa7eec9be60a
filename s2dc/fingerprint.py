"""The code a computation runs, as hashes: :func:`code_fingerprint` of the s2dc modules it imports (their syntax trees
without docstrings, so comments and documentation do not count), and :func:`libraries`, the versions of the
libraries whose kernels it computes with. Run identities (:mod:`s2dc.train.identity`) and the preprocessing caches
(:mod:`s2dc.data.volumes`) are keyed by both, so that changed code or libraries never reuse what the old ones made;
the workflow's jobs by the code alone (``workflow/rules/common.smk``: a library upgrade reruns no finished job,
while a run it interrupts starts afresh)."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

from .files import atomic_write_text

PACKAGE_ROOT = Path(__file__).resolve().parent
#: Modules of data, not code, that :func:`code_fingerprint` leaves out: the registry's dataset entries. Adding a
#: dataset (or editing one's entry) then changes no job's code hash; what reads an entry counts its own digest
#: (:func:`s2dc.data.registry.spec_digest`: the workflow's jobs as a param, a fine-tuning in its identity).
DATA_MODULES = ("s2dc.data.datasets",)


def digest(obj) -> str:
    """SHA-256 of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def libraries() -> dict[str, str]:
    """The versions of the libraries whose kernels a run computes with: ``{"torch": "2.13.0", "monai": ...}`` (a
    build's local tag, ``+cpu``, left off: the device does not count)."""
    import monai
    import torch

    return {"torch": torch.__version__.split("+")[0], "monai": monai.__version__}


def code_fingerprint(*modules: str, shallow: tuple[str, ...] = ()) -> str:
    """Hash of the s2dc modules that ``modules`` (e.g. ``"s2dc.train.pretrain"``) import, directly or not,
    read statically from their source; docstrings, comments and formatting do not count. ``shallow``: modules
    that count without what they import (``s2dc.cli``, which imports every stage). The modules of
    :data:`DATA_MODULES` do not count."""
    trees: dict[str, str] = {}
    for name in shallow:
        path = _module_file(name)
        if path is not None and name not in DATA_MODULES:
            trees[f"{name} (shallow)"] = _read_module(name, path.name == "__init__.py", path.read_bytes())[0]
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in trees or path is None or name in DATA_MODULES:
            continue
        trees[name], imported = _read_module(name, path.name == "__init__.py", path.read_bytes())
        todo += _parents(name) + list(imported)
    return digest(sorted(trees.items()))


#: Parsed modules are kept in ``$XDG_CACHE_HOME/s2dc/code`` (default ``~/.cache/s2dc/code``), one small json per
#: module source, named by the hash of the source, the module name and the Python version (whose ``ast`` it used):
#: every Snakemake start fingerprints the code of each stage, and parsing ~100 modules costs more than half a second.
CACHE_FORMAT = "1"


@functools.lru_cache(maxsize=None)
def _read_module(name: str, is_package: bool, source: bytes) -> tuple[str, tuple[str, ...]]:
    """A module's syntax tree without docstrings (its hash) and the names it imports; parsed once per version of
    the file (cached in this process and on disk, :data:`CACHE_FORMAT`)."""
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{sys.version}\n{name}\n{is_package}\n".encode() + source).hexdigest()
    cached = _cache_dir() / f"{key}.json"
    try:
        tree, imported = json.loads(cached.read_text())
        return tree, tuple(imported)
    except (OSError, ValueError):
        pass
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    imported = tuple(_imported(tree, package))
    result = hashlib.sha256(ast.dump(_without_docstrings(tree)).encode()).hexdigest(), imported
    try:  # a cache that cannot be written only costs time
        atomic_write_text(cached, json.dumps(result))
    except OSError:
        pass
    return result


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s2dc" / "code"


def _module_file(name: str) -> Path | None:
    if name != "s2dc" and not name.startswith("s2dc."):
        return None
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE_ROOT / "__init__.py"
    for path in (PACKAGE_ROOT.joinpath(*parts[:-1], parts[-1] + ".py"), PACKAGE_ROOT.joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path
    return None


def _parents(name: str) -> list[str]:
    """Packages executed on import: ``a.b.c`` -> ``[a, a.b]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(tree: ast.Module, package: str) -> list[str]:
    """Module names an AST imports (``from x import y`` gives both ``x`` and ``x.y``: y may be a module)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree
