"""Packaging: the library works without the pipeline's packages; pins, conda env and licence agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PIPELINE_ONLY = ["snakemake", "dvc", "optuna", "matplotlib", "jsonschema", "sklearn"]


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_norm(name)] = Version(version)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_library_trains_without_the_pipeline_packages(tmp_path, tiny_config, volumes_dir):
    """With snakemake, dvc, optuna, matplotlib, jsonschema and scikit-learn unimportable, every command module
    imports and a pretraining run works, its curves included."""
    code = f"""
import sys
for name in {PIPELINE_ONLY!r}:
    sys.modules[name] = None  # import fails
import s2dc.cli, s2dc.export, s2dc.report.tables, s2dc.eval.probe, s2dc.eval.figures, s2dc.downstream.engine, s2dc.data.synthetic
sys.exit(s2dc.cli.main(["pretrain", "--config", {str(tiny_config)!r}, "--data.source",
                        {str(volumes_dir / "dataset.json")!r}, "--run.out_dir", "run", "--optim.steps", "1"]))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "dvclive" / "plots" / "metrics" / "pretrain" / "loss.tsv").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step_00000001.pt").is_file()


def test_constraints_pin_every_dependency_inside_its_range():
    pins = constraints()
    requirements = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in PYPROJECT["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    for req in requirements:
        assert _norm(req.name) in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), (req, pins[_norm(req.name)])
    assert pins["torch"] == Version("2.13.0")


def test_the_oldest_python_the_project_names_installs_every_pin():
    """pyproject's `requires-python` and README's "Python ≥ X" name the same oldest Python, and every distribution
    that constraints.txt pins (as installed here) accepts it: README said 3.10 while numpy 2.4, pandas 3 and scipy 1.17
    need 3.11 (and s2dc uses 3.11's `hashlib.file_digest`), so the install command could not work on 3.10."""
    from importlib.metadata import PackageNotFoundError, metadata
    from packaging.specifiers import SpecifierSet

    oldest = re.fullmatch(r">=(\d+\.\d+)", PYPROJECT["requires-python"]).group(1)
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^Python ≥ (\d+\.\d+) ", readme, flags=re.M).group(1) == oldest
    refusing = {}
    for name in constraints():
        try:
            needs = metadata(name).get("Requires-Python")
        except PackageNotFoundError:  # pinned for an extra not installed here (e.g. slurm)
            continue
        if needs and not SpecifierSet(needs).contains(oldest):
            refusing[name] = needs
    assert not refusing, f"these pins do not install on Python {oldest}: {refusing}"


def test_the_rules_conda_env_pins_what_the_constraints_pin():
    env = yaml.safe_load((REPO / "workflow/envs/s2dc.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = dict(line.split("==") for line in pip if "==" in line)
    pins = constraints()
    direct = [Requirement(r).name for r in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["pipeline"]]
    assert sorted(_norm(n) for n in pinned) == sorted(_norm(n) for n in direct)
    for name, version in pinned.items():
        assert Version(version) == pins[_norm(name)], name
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == f"python={sys.version_info.major}.{sys.version_info.minor}"


def test_licence_file_matches_pyproject():
    assert PYPROJECT["license"] == "Apache-2.0" and PYPROJECT["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_ci_installs_exactly_as_the_readme_says():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    setup = re.search(r"```bash\n(python3 -m venv .venv .*?)\n```", readme).group(1)
    install = setup.split(" && snakemake")[0]
    assert "-c constraints.txt" in install and ".[pipeline,dev]" in install
    assert install in ci
    tests = re.search(r"one runs the tests.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    assert tests in ci


def test_light_commands_start_without_torch_or_monai(tmp_path):
    """`s2dc synth` (seven jobs of every DAG) and `datasets` run without importing torch or MONAI (~4 s of start-up
    each), and so do the option classes the workflow checks params.yaml with; `finetune` still lists its options."""
    code = (
        "import sys\n"
        "from s2dc.cli import build_parser, main\n"
        f"assert main(['synth', '--kind', 'cc_ccii', '--out', {str(tmp_path / 'cc')!r}, '--cases', '6', '--seed', '0',"
        " '--shape', '32', '32', '16']) == 0\n"
        "assert main(['datasets', 'btcv']) == 0\n"
        "options = build_parser('finetune')._subparsers._group_actions[0].choices['finetune'].format_help()\n"
        "assert '--model.init' in options and '--preprocess.intensity' in options\n"
        "import s2dc.train.config, s2dc.train.identity  # what the workflow validates params.yaml with\n"
        "heavy = sorted(m for m in ('torch', 'monai') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "cc" / "dataset.json").is_file()
