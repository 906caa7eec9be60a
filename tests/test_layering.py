"""Data flows one way: no module imports a later stage of the chain
data -> views -> models -> losses -> pretrain -> downstream -> eval -> report (the command line sits on top)."""

from __future__ import annotations

import ast

from conftest import REPO

# Stage of each top-level part of the package; shared helpers sit at the bottom, the command line at the top.
STAGES = {
    "files": 0, "fingerprint": 0, "recorded": 0, "config": 0, "runtime": 0, "data": 0, "pyplot": 0, "pages": 0,
    "messages": 0,
    "views": 1, "view_config": 1, "models": 2, "losses": 3,
    "train": 4, "export": 4,  # pretraining, its checkpoints and the encoder export
    "downstream": 5, "eval": 6, "report": 7, "tune": 7, "cli": 8,
    "workflow_checks": 8,  # the workflow's checks of params.yaml (workflow/rules/common.smk), on top like the CLI
}


def _stage(module: str) -> int:
    part = module.split(".")[1] if module.startswith("s2dc.") else module
    return STAGES[part]


def _imports(path, module: str) -> set[str]:
    """Absolute names of the s2dc modules ``path`` imports (relative imports resolved)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            if name.startswith("s2dc"):
                found.add(name)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("s2dc")}
    return found


def test_no_module_imports_a_later_stage():
    offenders = []
    files = sorted((REPO / "s2dc").rglob("*.py"))
    assert len(files) > 40
    for path in files:
        rel = path.relative_to(REPO).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if module == "s2dc":
            continue
        for imported in _imports(path, module):
            if imported != "s2dc" and _stage(imported) > _stage(module):
                offenders.append(f"{module} imports {imported}")
    assert offenders == []
