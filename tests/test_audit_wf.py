"""Found by an audit of the workflow's trust rules (a change of params.yaml reruns exactly the jobs it affects)."""

from __future__ import annotations

import yaml

from conftest import REPO, snakemake


def test_a_launcher_spelled_another_way_reruns_no_pretraining(tmp_path):
    """`b17581b` named a pretraining's run folder after the launcher's words, so that `--nproc_per_node=4` for
    `--nproc_per_node 4` finds the same run; but the launcher as written was the job's param, so the respelling still
    reran every pretraining (exporting its encoder again) and, through the new encoder.pt, every fine-tuning, probe,
    figure and table after it (`snakemake -n` at smoke after a finished run: 15 jobs for `launcher: "s2dc "`)."""
    encoder = "results/smoke/pretrain/CT/s2dc/encoder.pt"
    done = snakemake(tmp_path, "--cores", "1", encoder, "--config", "scale=smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for spelled in ("s2dc ", "'s2dc'", " s2dc"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = spelled
        (tmp_path / "respelled.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        again = snakemake(tmp_path, "-n", encoder, "--config", "scale=smoke", configfile=tmp_path / "respelled.yaml")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "Nothing to be done" in again.stdout + again.stderr, (spelled, again.stdout[-3000:])
    params["scales"]["smoke"]["pretrain"]["launcher"] = "s2dc --data.workers 0"  # other words: another run
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    other = snakemake(tmp_path, "-n", encoder, "--config", "scale=smoke", configfile=tmp_path / "other.yaml")
    assert other.returncode == 0 and "Params have changed" in other.stdout, other.stdout[-3000:]
