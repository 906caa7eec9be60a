"""The dataset registry and the converters from official release layouts (issue 8, slice 1)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from s2dc.data import registry
from s2dc.data.sources import prepare
from s2dc.data.errors import DataError

from conftest import REPO


def test_registry_holds_the_papers_ten_datasets_and_three_pools():
    """method.md §6: ten downstream datasets over four tasks and three modalities, one pool per modality."""
    downstream = [registry.get(n) for n in registry.downstream_names()]
    assert len(downstream) == 10
    by_task = {t: sorted(s.name for s in downstream if s.task == t) for t in registry.TASK_METRICS}
    assert by_task == {
        "segmentation": ["autopet", "brats21", "btcv", "msd_liver", "msd_lung", "msd_spleen"],
        "classification": ["adni", "cc_ccii"],
        "reconstruction": ["udpet"],
        "translation": ["brats23"],
    }
    assert {m: registry.pool_for(m) for m in registry.MODALITIES} == {"CT": "ct_pool", "MRI": "mri_pool", "PET": "pet_pool"}
    assert {s.modality for s in downstream} == {"CT", "MRI", "PET"}
    assert registry.get("brats21").channels == ("t1", "t1ce", "t2", "flair")
    assert len(registry.get("btcv").outputs) == 13 and registry.get("btcv").labels[13] == "left adrenal gland"
    assert registry.get("cc_ccii").metrics[0] == "accuracy" and registry.get("udpet").metrics[0] == "psnr"


def test_msd_archives_are_the_ones_monai_records():
    """The registry's MSD URLs and MD5s equal MONAI's own table (an independent source)."""
    from monai.apps import DecathlonDataset

    for name, task in (("msd_liver", "Task03_Liver"), ("msd_lung", "Task06_Lung"), ("msd_spleen", "Task09_Spleen")):
        (archive,) = registry.get(name).archives
        assert (archive.url, archive.md5) == (DecathlonDataset.resource[task], DecathlonDataset.md5[task])


def test_paper_numbers_are_the_posters():
    """Poster Table 1 (CC-CCII accuracy at 10/50/100 %) and Table 2 (BTCV / AutoPET Dice), as method.md §7 quotes them."""
    table1 = {"scratch": (77.15, 92.28, 94.15), "swinmm": (87.87, 93.50, 94.80), "voco": (86.73, 92.43, 94.60),
              "s2dc": (88.29, 93.89, 95.34)}
    for method, scores in table1.items():
        assert [registry.get("cc_ccii").paper_score(method, r) for r in (0.1, 0.5, 1.0)] == list(scores)
    table2 = {"lg": (83.43, 45.72), "lg_p2p": (83.98, 45.85), "lg_p2s": (84.02, 46.23), "s2dc": (84.14, 46.47)}
    for method, (btcv, autopet) in table2.items():
        assert registry.get("btcv").paper_score(method, 1.0) == btcv
        assert registry.get("autopet").paper_score(method, 1.0) == autopet
    assert registry.get("btcv").paper_score("scratch", 0.1) is None
    assert dict(registry.PAPER_AVERAGE) == {"scratch": 77.93, "voco": 80.65, "s2dc": 81.43}


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(registry.UnknownDatasetError, match="unknown dataset 'lits'.*'btcv'"):
        registry.get("lits")


@pytest.mark.parametrize("bad, message", [
    (dict(task="detection"), "task must be one of"),
    (dict(modality="US"), "modality must be one of"),
    (dict(preset="hu"), "preset must be one of"),
    (dict(outputs=()), "names what it predicts"),
    (dict(labels={1: "spleen"}), "0 to 'background'"),
])
def test_a_bad_spec_is_refused_naming_the_dataset(bad, message):
    spec = dict(name="x", title="X", task="segmentation", modality="CT", channels=("CT",), outputs=("spleen",),
                labels={0: "background", 1: "spleen"}, preset="ct_abdomen", access="open", where="w", licence="l",
                layout="x/", layout_source="s")
    with pytest.raises(ValueError, match=f"dataset 'x'.*{re.escape(message)}"):
        registry.DatasetSpec(**{**spec, **bad})


@pytest.mark.parametrize("datasets, experiments, modalities, message", [
    ({"lits": {"source": "real"}}, [], [], "scales.x.datasets.lits: not a registry dataset"),
    ({"adni": {"source": "synthetic"}}, [], [], "no synthetic twin of adni"),
    ({"btcv": {"source": "real"}}, ["spleen"], [], "experiments.datasets names 'spleen'"),
    ({"ct_pool": {"source": "real"}}, ["ct_pool"], [], "names the pretraining pool 'ct_pool'"),
    ({"btcv": {"source": "real"}}, ["btcv"], ["MRI"], "has MRI, but its pool 'mri_pool'"),
    # a dataset added to the registry without a converter of its release: refused when the workflow starts, not
    # after its archive was downloaded (an MSD task's is 11 GB) and its convert job ran
    ({"adni": {"source": "real"}}, [], [], "scales.x.datasets.adni: there is no converter of adni's release yet"),
])
def test_a_scales_dataset_choice_is_checked(datasets, experiments, modalities, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.check_selection("scales.x", datasets, experiments, modalities, twins=("btcv",),
                                 converters=("btcv", "ct_pool"))
    registry.check_selection("scales.x", {"btcv": {"source": "synthetic"}, "ct_pool": {"source": "real"}},
                             ["btcv"], ["CT"], twins=("btcv",), converters=("ct_pool",))


def _string_constants(path: Path) -> set[str]:
    if path.suffix == ".py":
        return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return set(re.findall(r"[A-Za-z0-9_]+", path.read_text()))


def test_no_module_but_the_registry_names_a_dataset():
    """Rules, CLI, report and schema read the registry; only it (its entries too), the converters (one per dataset) and the
    synthetic twins (keyed by registry name) spell a dataset's name."""
    allowed = {REPO / "s2dc/data/registry.py", REPO / "s2dc/data/datasets.py"}  # the registry and its entries
    files = [p for p in (*REPO.glob("s2dc/**/*.py"), *REPO.glob("workflow/**/*.smk"), *REPO.glob("workflow/**/*.yaml"),
                         REPO / "Snakefile")
             if p not in allowed and "sources" not in p.parts and "synthetic" not in p.parts]
    assert len(files) > 20
    offenders = {str(p.relative_to(REPO)): sorted(_string_constants(p) & set(registry.REGISTRY)) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def _code_words(path: Path) -> set[str]:
    """The string constants of a Python module; the words of a rule file's code (its comments left out)."""
    if path.suffix == ".py":
        return _string_constants(path)
    return set(re.findall(r"[A-Za-z0-9_]+", "\n".join(line.split("#")[0] for line in path.read_text().splitlines())))


def test_no_module_but_the_registry_and_the_tasks_own_modules_names_a_task():
    """A task is data to the layers between: the registry (what each task reads and is scored by), the common layout's
    parser (the keys of each task's cases), the converters and twins (which write them), the downstream task modules
    (one per task: how it trains, and how the frozen protocol reads it) and the report's task table (how it is shown)
    name the downstream tasks; the engine, the probe, its figures, the rules, the checks and the other report modules
    read them from those, so that a fifth task is an entry in each of those places and no branch elsewhere."""
    tasks = set(registry.TASK_METRICS)
    allowed = {REPO / "s2dc/data/registry.py", REPO / "s2dc/data/datasets.py", REPO / "s2dc/data/datalist.py",
               REPO / "s2dc/report/tasks.py"}
    files = [p for p in (*REPO.glob("s2dc/**/*.py"), *REPO.glob("workflow/**/*.smk"), REPO / "Snakefile")
             if p not in allowed and not {"sources", "synthetic", "tasks"} & set(p.relative_to(REPO).parts[:-1])]
    assert REPO / "s2dc/downstream/engine.py" in files and REPO / "s2dc/eval/probe.py" in files and len(files) > 20
    offenders = {str(p.relative_to(REPO)): sorted(_code_words(p) & tasks) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


# --------------------------------------------------------------------------- converters


def _nifti(path: Path, shape=(4, 4, 3), dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype), np.eye(4)), str(path))
    return path


def btcv_release(root: Path) -> Path:
    """Synapse's BTCV layout with the 30 labelled training cases (ids 1-10, 21-40), 4x4x3 voxels each."""
    for i in (*range(1, 11), *range(21, 41)):
        _nifti(root / f"RawData/Training/img/img{i:04d}.nii.gz")
        _nifti(root / f"RawData/Training/label/label{i:04d}.nii.gz", dtype=np.uint8)
    _nifti(root / "RawData/Testing/img/img0061.nii.gz")
    return root


def test_btcv_release_becomes_swinunetrs_split(tmp_path):
    raw = btcv_release(tmp_path / "raw")
    out = prepare("btcv", raw, tmp_path / "prepared")
    doc = json.loads(out.read_text())
    assert (doc["name"], doc["task"], doc["modality"]) == ("btcv", "segmentation", {"0": "CT"})
    assert doc["labels"]["6"] == "liver" and len(doc["labels"]) == 14

    def ids(section):
        return [int(re.search(r"img(\d+)", e["image"]).group(1)) for e in doc[section]]

    assert ids("training") == [*range(1, 11), *range(21, 35)] and ids("validation") == list(range(35, 41))
    for entry in doc["training"] + doc["validation"]:  # relative to the json, pointing into the release
        image, label = ((out.parent / entry[k]).resolve() for k in ("image", "label"))
        assert image.is_file() and label.is_file() and raw.resolve() in image.parents
        assert label.name == image.name.replace("img", "label")


@pytest.mark.parametrize("damage, named", [
    (lambda raw: (raw / "RawData/Training/label/label0035.nii.gz").unlink(), "label0035.nii.gz"),
    (lambda raw: (raw / "RawData/Training/img/img0007.nii.gz").unlink(), "img0007.nii.gz"),
    (lambda raw: (raw / "RawData/Training/img/img0022.nii.gz").write_bytes(b"not a nifti"), "img0022.nii.gz"),
    (lambda raw: _nifti(raw / "RawData/Training/label/label0003.nii.gz", shape=(4, 4, 2)), "label0003.nii.gz"),
])
def test_a_broken_btcv_release_is_refused_naming_the_file(tmp_path, damage, named):
    raw = btcv_release(tmp_path / "raw")
    damage(raw)
    with pytest.raises(DataError, match=re.escape(named)):
        prepare("btcv", raw, tmp_path / "prepared")
    assert not (tmp_path / "prepared" / "dataset.json").exists()


def test_a_missing_release_says_where_to_get_it_and_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as err:
        prepare("btcv", tmp_path / "nowhere", tmp_path / "prepared")
    text = str(err.value)
    assert "needs a registration" in text and "synapse.org" in text and str(tmp_path / "nowhere") in text
    assert "RawData/" in text and "Training/img/img0001.nii.gz" in text


def test_a_pool_list_is_checked_file_by_file(tmp_path):
    raw = tmp_path / "pool"
    for i in range(3):
        _nifti(raw / "volumes" / f"v{i}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"training": [{"image": f"volumes/v{i}.nii.gz"} for i in range(3)]}))
    doc = json.loads(prepare("ct_pool", raw, tmp_path / "out").read_text())
    assert [(tmp_path / "out" / e["image"]).resolve() for e in doc["training"]] == \
        [(raw / "volumes" / f"v{i}.nii.gz").resolve() for i in range(3)]
    (raw / "volumes" / "v1.nii.gz").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="v1.nii.gz"):
        prepare("ct_pool", raw, tmp_path / "out2")


def test_cli_lists_the_registry_and_refuses_an_unknown_name(capsys):
    from s2dc.cli import main

    assert main(["datasets"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(registry.REGISTRY)
    assert main(["datasets", "lits"]) == 2
    assert "unknown dataset 'lits'" in capsys.readouterr().err


def test_the_datasets_command_says_which_label_ratio_of_the_poster_is_our_reading(capsys):
    """Table 1 prints its label ratios (CC-CCII at 10 / 50 / 100 %); Table 2 prints none (seed-poster.txt), so `s2dc
    datasets btcv` must not show its 84.14 as printed at 100 % labels."""
    from s2dc.cli import main

    assert main(["datasets", "btcv"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "84.14" in x)
    assert "our reading" in line
    assert main(["datasets", "cc_ccii"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "88.29" in x)
    assert line == "paper: s2dc at 10% labels: 88.29 (poster Table 1)"


def test_a_btcv_label_may_be_gzipped_or_not_whatever_its_image():
    """img0001.nii.gz beside label0001.nii (or the other way round) is one case: the suffix is not the case's."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw = btcv_release(Path(tmp) / "raw")
        label = raw / "RawData/Training/label/label0001.nii.gz"
        plain = label.with_name("label0001.nii")
        nib.save(nib.load(str(label)), str(plain))
        label.unlink()
        image = raw / "RawData/Training/img/img0002.nii.gz"
        nib.save(nib.load(str(image)), str(image.with_name("img0002.nii")))
        image.unlink()
        doc = json.loads(prepare("btcv", raw, Path(tmp) / "prepared").read_text())
        first, second = doc["training"][:2]
        assert first["label"].endswith("label0001.nii") and second["image"].endswith("img0002.nii")
        assert second["label"].endswith("label0002.nii.gz")


def test_an_edited_entry_changes_its_own_digest_only(monkeypatch):
    """Each job that reads a dataset's entry carries its digest (registry.spec_digest): editing what BTCV's jobs read
    (a label's name, its channels) reruns BTCV's jobs, and no other dataset's, and the tables that show BTCV."""
    import dataclasses
    from types import MappingProxyType

    before = {name: registry.spec_digest(name) for name in registry.REGISTRY}
    assert len(set(before.values())) == len(before)
    tables = registry.report_digest(["btcv"])
    btcv = registry.get("btcv")
    for edited in (dataclasses.replace(btcv, channels=("CT (venous phase)",)),
                   dataclasses.replace(btcv, labels={**btcv.labels, 11: "pancreas (head)"},
                                       outputs=tuple("pancreas (head)" if o == "pancreas" else o for o in btcv.outputs))):
        monkeypatch.setattr(registry, "REGISTRY", MappingProxyType({**registry.REGISTRY, "btcv": edited}))
        after = {name: registry.spec_digest(name) for name in registry.REGISTRY}
        assert [n for n in before if after[n] != before[n]] == ["btcv"]
        assert registry.report_digest(["btcv"]) != tables
    monkeypatch.undo()
    assert {name: registry.spec_digest(name) for name in registry.REGISTRY} == before  # stable in a process
    # The tables' digest: their datasets' entries and the poster's numbers; a dataset added without numbers is neither.
    shown = registry.report_digest(["btcv", "cc_ccii"])
    added = dataclasses.replace(registry.get("msd_spleen"), name="msd_pancreas", title="MSD Task07 Pancreas")
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType({**registry.REGISTRY, "msd_pancreas": added}))
    assert registry.report_digest(["btcv", "cc_ccii"]) == shown
    assert registry.report_digest(["btcv", "cc_ccii", "msd_pancreas"]) != shown
    cc_only = registry.report_digest(["cc_ccii"])
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType({**registry.REGISTRY, "btcv": dataclasses.replace(
        btcv, paper=btcv.paper[:1])}))
    assert registry.report_digest(["cc_ccii"]) != cc_only  # every entry's poster numbers count


def test_a_corrected_note_reruns_no_job(monkeypatch):
    """What only people read of an entry (its title, where to get it, licence, layout text and its source, notes,
    the poster's numbers) is not in the digest the jobs carry: a typo fixed there reruns no pretraining or fine-tuning
    (before, the digest held every field). A poster number still reruns the tables (registry.report_digest)."""
    import dataclasses
    from types import MappingProxyType

    btcv = registry.get("btcv")
    before, tables = registry.spec_digest("btcv"), registry.report_digest(["btcv"])
    for field, value in (("title", "BTCV (edited)"), ("where", "elsewhere"), ("licence", "CC0"),
                         ("layout", btcv.layout + " "), ("layout_source", "a paper"), ("notes", "edited")):
        monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(
            {**registry.REGISTRY, "btcv": dataclasses.replace(btcv, **{field: value})}))
        assert registry.spec_digest("btcv") == before, field
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(
        {**registry.REGISTRY, "btcv": dataclasses.replace(btcv, paper=btcv.paper[:1])}))
    assert registry.spec_digest("btcv") == before and registry.report_digest(["btcv"]) != tables
    for field, value in (("preset", "ct_pretrain"), ("outputs", btcv.outputs[:-1] + ("adrenal (left)",)),
                         ("access", "open")):
        monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(
            {**registry.REGISTRY, "btcv": dataclasses.replace(btcv, **{field: value})}))
        assert registry.spec_digest("btcv") != before, field
