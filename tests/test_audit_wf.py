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


def test_a_run_metrics_edited_by_hand_is_not_deleted_by_the_next_run(tmp_path):
    """A fine-tuning run's metrics.json records its result_sha256, and the report refuses it edited (as a probe result,
    `50a0d09`); but the start check knew a run's metrics.json by its keys alone: after a hand edit (a score corrected)
    and a change that reruns that run (its dataset's fine-tuning options), `snakemake` deleted the edited file before
    the job and wrote a new one, exit 0. It now stops at start, naming the file, and leaves it as it was."""
    import json

    run = "results/smoke/finetune/segmentation/btcv/scratch/labels50pct/seed0/metrics.json"
    done = snakemake(tmp_path, "--cores", "1", run, "--config", "scale=smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / run).read_text())
    doc["score"]["value"] = 99.0  # edited by hand
    edited = json.dumps(doc, indent=2)
    (tmp_path / run).write_text(edited)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["smoke"]["datasets"]["btcv"]["finetune"] = {"train": {"lr": 2.0e-3}}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = snakemake(tmp_path, "--cores", "1", run, "--config", "scale=smoke", configfile=tmp_path / "changed.yaml")
    out = again.stdout + again.stderr
    assert again.returncode != 0, out[-3000:]
    assert run in out and "result_sha256" in out and "Snakemake deletes" in out, out[-3000:]
    assert (tmp_path / run).read_text() == edited
