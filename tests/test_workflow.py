"""Snakemake conventions: the default profile, commands that need no --cores, rule threads and resources."""

from __future__ import annotations

from conftest import REPO, snakemake


def test_bare_snakemake_reads_the_default_profile(tmp_path):
    """`snakemake` with no --profile picks up profiles/default beside the Snakefile (rerun-incomplete etc.)."""
    run = snakemake(tmp_path, "-n", "--config", "scale=smoke")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert f"workflow specific profile {REPO / 'profiles/default'}" in out


def test_dag_and_report_need_no_cores(tmp_path):
    """`--dag` and `--report` work without --cores and without the default profile (which sets cores)."""
    dag = snakemake(tmp_path, "--dag", "--workflow-profile", "none", "--config", "scale=smoke")
    assert dag.returncode == 0, dag.stderr[-3000:]
    assert dag.stdout.lstrip().startswith("digraph") and "pretrain" in dag.stdout
    report = snakemake(tmp_path, "--report", "report.html", "--workflow-profile", "none", "--config", "scale=smoke")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 1000
