"""The dataset registry: the only place a dataset of the benchmark is named.

Each of the paper's ten downstream datasets and three pretraining pools (method.md §6) is one
:class:`DatasetSpec`: its task, modality, input channels, what is predicted, metrics, intensity
preset, how the real data is obtained (open download or registration, licence, official on-disk
layout with the source that documents it) and the poster's numbers where it prints them. The
workflow, the command line and the report read it; nothing else hard-codes a dataset name, a class
count or a task.

Facts marked "not verified" in a spec's ``notes`` could not be checked against the data owner's
own pages; the sources are those named in ``layout_source``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

TASKS = ("pretraining", "segmentation", "classification", "reconstruction", "translation")
MODALITIES = ("CT", "MRI", "PET")

#: Metrics of each downstream task; the first is the score the benchmark table reports.
TASK_METRICS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "segmentation": ("dice",),
    "classification": ("accuracy", "auc"),
    "reconstruction": ("psnr", "ssim", "nrmse"),
    "translation": ("psnr", "ssim", "mse"),
})


class UnknownDatasetError(ValueError):
    """A dataset name that is not in the registry."""


@dataclass(frozen=True)
class Preset:
    """How a modality's intensities are normalised before the network sees them.

    ``window``: clip to [a_min, a_max] (HU for CT) and scale to [0, 1]. ``zscore``: subtract the
    mean and divide by the standard deviation of the non-zero voxels, per channel. ``scale``:
    divide by ``a_max`` (8-bit images: 255).
    """

    kind: str
    a_min: float | None = None
    a_max: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("window", "zscore", "scale"):
            raise ValueError(f"preset kind must be window, zscore or scale, got {self.kind!r}")
        if self.kind == "window" and not (self.a_min is not None and self.a_max is not None and self.a_min < self.a_max):
            raise ValueError(f"a window preset needs a_min < a_max, got {self.a_min!r}, {self.a_max!r}")
        if self.kind == "scale" and not (self.a_max is not None and self.a_max > 0):
            raise ValueError(f"a scale preset needs a_max > 0, got {self.a_max!r}")


PRESETS: Mapping[str, Preset] = MappingProxyType({
    "ct_pretrain": Preset("window", -1000.0, 1000.0, "release pretraining window: HU [-1000, 1000] -> [0, 1]"),
    "ct_abdomen": Preset("window", -175.0, 250.0, "release BTCV fine-tuning window: HU [-175, 250] -> [0, 1]"),
    "ct_lung": Preset("window", -1000.0, 400.0, "lung window (W 1400, L -300): HU [-1000, 400] -> [0, 1]"),
    "ct_8bit": Preset("scale", None, 255.0, "8-bit slice images (CC-CCII PNGs) / 255, as the release's loader"),
    "mri_zscore": Preset("zscore", description="z-score of the non-zero (brain) voxels, per sequence"),
    "pet_zscore": Preset("zscore", description="z-score of the non-zero voxels (SUV or counts), per channel"),
})


@dataclass(frozen=True)
class Archive:
    """One file of an open download: where it is, its MD5 and size in bytes (None: not published)."""

    url: str
    md5: str
    size: int | None = None


@dataclass(frozen=True)
class PaperScore:
    """A number the poster prints: ``method`` (scratch, or a pretraining variant of params.yaml: s2dc; the Table 2
    ablation rows lg, lg_p2p, lg_p2s) at ``label_ratio`` scores ``score`` (%) in ``table``."""

    method: str
    label_ratio: float
    score: float
    table: str


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the benchmark (see the module docstring)."""

    name: str
    title: str
    task: str
    modality: str
    channels: tuple[str, ...]
    outputs: tuple[str, ...]
    preset: str
    access: str
    where: str
    licence: str
    layout: str
    layout_source: str
    labels: Mapping[int, str] = field(default_factory=dict)
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    archives: tuple[Archive, ...] = ()
    paper: tuple[PaperScore, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        where = f"dataset '{self.name}'"
        if self.task not in TASKS:
            raise ValueError(f"{where}: task must be one of {TASKS}, got {self.task!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"{where}: modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"{where}: preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.access not in ("open", "registration"):
            raise ValueError(f"{where}: access must be 'open' or 'registration', got {self.access!r}")
        if not self.channels:
            raise ValueError(f"{where}: needs at least one input channel")
        if self.task == "pretraining" and self.outputs:
            raise ValueError(f"{where}: a pretraining pool predicts nothing (outputs must be empty)")
        if self.task != "pretraining" and not self.outputs:
            raise ValueError(f"{where}: a {self.task} dataset names what it predicts (outputs)")
        if self.task == "classification" and len(self.outputs) < 2:
            raise ValueError(f"{where}: classification needs at least two classes")
        if self.task == "segmentation" and self.labels.get(0) != "background":
            raise ValueError(f"{where}: segmentation labels must map 0 to 'background'")
        if self.regions and (tuple(self.regions) != self.outputs
                             or not all(set(v) <= set(self.labels) - {0} for v in self.regions.values())):
            raise ValueError(f"{where}: regions must be the outputs, each a set of non-background label values")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "regions", MappingProxyType(dict(self.regions)))

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metrics of this dataset's task (empty for a pretraining pool); the first is the score."""
        return TASK_METRICS.get(self.task, ())

    @property
    def downstream(self) -> bool:
        return self.task != "pretraining"

    def paper_score(self, method: str, label_ratio: float) -> float | None:
        """The poster's number for ``method`` at ``label_ratio``, or None when it prints none."""
        for p in self.paper:
            if p.method == method and abs(p.label_ratio - label_ratio) < 1e-9:
                return p.score
        return None

    def instructions(self, folder: str) -> str:
        """What to tell a user who lacks the real data: where to get it and where to put it."""
        how = "is an open download" if self.access == "open" else "needs a registration"
        return (
            f"{self.title} ({self.name}) {how}: {self.where} (licence: {self.licence}). "
            f"Put it in '{folder}' in its official release layout:\n"
            + textwrap.indent(self.layout.strip("\n"), "    ")
            + f"\n(layout documented by {self.layout_source})"
        )


_MSD = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
_MSD_LAYOUT = """
{task}/
  dataset.json          labels {labels}
  imagesTr/{case}_*.nii.gz
  labelsTr/{case}_*.nii.gz
  imagesTs/{case}_*.nii.gz   (no labels released)
"""
_MSD_SOURCE = ("MONAI monai/apps/datasets.py (DecathlonDataset resource and md5); "
               "http://medicaldecathlon.com/ (licence)")


def _foreground(labels: dict[int, str]) -> tuple[str, ...]:
    """Names of a segmentation's classes without the background, in label order."""
    return tuple(name for value, name in sorted(labels.items()) if value != 0)


_BTCV_LABELS = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder", 5: "esophagus",
                6: "liver", 7: "stomach", 8: "aorta", 9: "inferior vena cava", 10: "portal and splenic veins",
                11: "pancreas", 12: "right adrenal gland", 13: "left adrenal gland"}


def _msd(name: str, task: str, md5: str, outputs: tuple[str, ...], preset: str, notes: str) -> DatasetSpec:
    """A Medical Segmentation Decathlon task: open, CC-BY-SA 4.0, one CT channel, MONAI's archive."""
    labels = {0: "background", **dict(enumerate(outputs, start=1))}
    number, organ = task[4:6], task[7:]
    return DatasetSpec(
        name=name, title=f"MSD Task{number} {organ}", task="segmentation", modality="CT", channels=("CT",),
        labels=labels, outputs=outputs, preset=preset, access="open", where="http://medicaldecathlon.com/",
        licence="CC-BY-SA 4.0", layout_source=_MSD_SOURCE,
        layout=_MSD_LAYOUT.format(task=task, labels=", ".join(f"{k} {v}" for k, v in labels.items()), case=organ.lower()),
        archives=(Archive(f"{_MSD}/{task}.tar", md5),), notes=notes,
    )


_BRATS21_LABELS = {0: "background", 1: "necrotic tumour core", 2: "peritumoral edema", 4: "enhancing tumour"}

_SPECS = (
    # ---------------------------------------------------------------- pretraining pools
    DatasetSpec(
        name="ct_pool", title="CT pretraining pool (BTCV + TCIA-COVID19)", task="pretraining", modality="CT",
        channels=("CT",), outputs=(), preset="ct_pretrain", access="registration",
        where="BTCV: https://www.synapse.org/#!Synapse:syn3193805; TCIA-COVID19: "
              "https://wiki.cancerimagingarchive.net/display/Public/CT+Images+in+COVID-19",
        licence="BTCV: Synapse terms (not verified); TCIA-COVID19: CC BY 4.0",
        layout="""
ct_pool/
  dataset.json   {"training": [{"image": "<path of a CT volume>"}, ...]}   (746 volumes in the release)
  <the volumes, NIfTI; paths in dataset.json relative to this folder>
""",
        layout_source="release Pretrain/utils/data_utils.py get_1k_loader (btcv.json + dataset_TCIAcovid19_0.json, "
                      "the latter published in Project-MONAI/MONAI-extra-test-data release 0.8.1)",
        notes="The release reads only the 'training' key: 24 BTCV + 722 TCIA-COVID19 = 746 volumes. "
              "LUNA16 (888 scans, Zenodo records 3723295 and 4121926) extends it to ~1.6k.",
    ),
    DatasetSpec(
        name="mri_pool", title="MRI pretraining pool (OASIS-3)", task="pretraining", modality="MRI",
        channels=("T1w",), outputs=(), preset="mri_zscore", access="registration",
        where="https://www.oasis-brains.org (data use agreement), then the OASIS3 project on NITRC-IR",
        licence="OASIS data use agreement (no redistribution)",
        layout="""
OASIS3/
  OAS30001_MR_d0129/anat1/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz   (download_oasis_scans.sh)
  OAS30001_MR_d0129/anat2/...
or
  sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz   (download_oasis_scans_bids.sh)
""",
        layout_source="NrgXnat/oasis-scripts README, download_scans/download_oasis_scans.sh and "
                      "download_scans/download_oasis_scans_bids.sh",
        notes="The release's list (jsons/mri_oasis3_clean.json) is not public; every T1w NIfTI is used.",
    ),
    DatasetSpec(
        name="pet_pool", title="PET pretraining pool (UDPET + ADNI)", task="pretraining", modality="PET",
        channels=("PET",), outputs=(), preset="pet_zscore", access="registration",
        where="UDPET: https://udpet-challenge.github.io; ADNI: https://adni.loni.usc.edu",
        licence="UDPET Data Transfer Agreement (signed, by e-mail to the organisers); ADNI data use agreement",
        layout="""
pet_pool/
  dataset.json   {"training": [{"image": "<path of a PET volume>"}, ...]}
  <full-dose UDPET volumes and ADNI PET volumes, NIfTI>
""",
        layout_source="release Pretrain/utils/data_utils.py get_pet_loader (jsons/pet_pretrain_udpet_adni.json, not public)",
    ),
    # ---------------------------------------------------------------- CT downstream
    DatasetSpec(
        name="btcv", title="BTCV", task="segmentation", modality="CT", channels=("CT",),
        labels=_BTCV_LABELS, outputs=_foreground(_BTCV_LABELS),
        preset="ct_abdomen", access="registration",
        where="https://www.synapse.org/#!Synapse:syn3193805/wiki/89480 (join the challenge, Abdomen/RawData.zip)",
        licence="Synapse terms of use (not verified)",
        layout="""
RawData/
  Training/img/img0001.nii.gz ... img0040.nii.gz     (30 labelled scans)
  Training/label/label0001.nii.gz ... label0040.nii.gz
  Testing/img/img0061.nii.gz ... img0080.nii.gz      (20, no labels)
""",
        layout_source="Project-MONAI/model-zoo swin_unetr_btcv_segmentation docs/README.md; "
                      "split: SwinUNETR dataset_0.json (24 training, 6 validation), "
                      "https://developer.download.nvidia.com/assets/Clara/monai/tutorials/swin_unetr_btcv_dataset_0.json",
        paper=(PaperScore("s2dc", 1.0, 84.14, "poster Table 2"),
               PaperScore("lg", 1.0, 83.43, "poster Table 2"),
               PaperScore("lg_p2p", 1.0, 83.98, "poster Table 2"),
               PaperScore("lg_p2s", 1.0, 84.02, "poster Table 2")),
    ),
    _msd("msd_liver", "Task03_Liver", "a90ec6c4aa7f6a3d087205e23d4e6397", ("liver", "cancer"), "ct_abdomen",
         "131 training and 70 test cases (not verified against the tar)."),
    _msd("msd_lung", "Task06_Lung", "8afd997733c7fc0432f71255ba4e52dc", ("cancer",), "ct_lung",
         "63 training and 32 test cases; a third party reports macOS '._' files in the tar (not verified)."),
    _msd("msd_spleen", "Task09_Spleen", "410d4a301da4e5b2f6f86ec3ddba524e", ("spleen",), "ct_abdomen",
         "41 training and 20 test cases."),
    DatasetSpec(
        name="cc_ccii", title="CC-CCII", task="classification", modality="CT", channels=("CT",),
        outputs=("Normal", "CP", "NCP"), preset="ct_8bit", access="open",
        where="http://ncov-ai.big.ac.cn/download?lang=en (China National Center for Bioinformation)",
        licence="CC BY 3.0 CN",
        layout="""
CC-CCII/
  NCP/<patient_id>/<scan_id>/<slice>.png|jpg    (novel coronavirus pneumonia)
  CP/<patient_id>/<scan_id>/...                 (common pneumonia)
  Normal/<patient_id>/<scan_id>/...
  unzip_filenames.csv    zip_file,label,patient_id,scan_id,n_slice
""",
        layout_source="Zhang et al., Cell 2020 (doi 10.1016/j.cell.2020.04.045); haydengunraj/COVIDNet-CT docs/dataset.md; "
                      "release Downstream/CC-CCII (folds from Luffy03/VoCo Finetune/CC-CCII/csv, target Normal=0, CP=1, NCP=2)",
        paper=(PaperScore("scratch", 0.1, 77.15, "poster Table 1"), PaperScore("scratch", 0.5, 92.28, "poster Table 1"),
               PaperScore("scratch", 1.0, 94.15, "poster Table 1"),
               PaperScore("swinmm", 0.1, 87.87, "poster Table 1"), PaperScore("swinmm", 0.5, 93.50, "poster Table 1"),
               PaperScore("swinmm", 1.0, 94.80, "poster Table 1"),
               PaperScore("voco", 0.1, 86.73, "poster Table 1"), PaperScore("voco", 0.5, 92.43, "poster Table 1"),
               PaperScore("voco", 1.0, 94.60, "poster Table 1"),
               PaperScore("s2dc", 0.1, 88.29, "poster Table 1"), PaperScore("s2dc", 0.5, 93.89, "poster Table 1"),
               PaperScore("s2dc", 1.0, 95.34, "poster Table 1")),
        notes="Open, but the portal has no stable per-file URL or checksum: download the zips by hand "
              "(NCP-k.zip is served as COVID19-k.zip) and unzip them into the class folders (a class folder "
              "nested once more, NCP/NCP/... or NC/Normal/..., as the release's prc_data.py reads it, is accepted too).",
    ),
    # ---------------------------------------------------------------- MRI downstream
    DatasetSpec(
        name="brats21", title="BraTS 2021", task="segmentation", modality="MRI",
        channels=("t1", "t1ce", "t2", "flair"), labels=_BRATS21_LABELS,
        outputs=("tumour core", "whole tumour", "enhancing tumour"),
        regions={"tumour core": (1, 4), "whole tumour": (1, 2, 4), "enhancing tumour": (4,)}, preset="mri_zscore", access="registration",
        where="https://www.synapse.org/#!Synapse:syn27046444/wiki/616992 (RSNA-ASNR-MICCAI BraTS 2021)",
        licence="BraTS 2021 data terms (not verified)",
        layout="""
TrainingData/        (any name: the folder BraTS2021_Training_Data.tar is extracted into; the tar has no top folder)
  BraTS2021_00000/
    BraTS2021_00000_t1.nii.gz   BraTS2021_00000_t1ce.nii.gz
    BraTS2021_00000_t2.nii.gz   BraTS2021_00000_flair.nii.gz
    BraTS2021_00000_seg.nii.gz  (0 background, 1 necrotic core, 2 edema, 4 enhancing)
  BraTS2021_00002/ ...
""",
        layout_source="Project-MONAI/research-contributions SwinUNETR/BRATS21/README.md (TrainingData/BraTS2021_01146/"
                      "BraTS2021_01146_flair.nii.gz); MIC-DKFZ/nnUNet nnunetv2/dataset_conversion/Dataset137_BraTS21.py "
                      "(file names, labels 0, 1, 2, 4); regions TC={1,4}, WT={1,2,4}, ET={4} as MONAI "
                      "ConvertToMultiChannelBasedOnBratsClasses",
        notes="Predicts the three overlapping regions (sigmoid per channel), scored by Dice per region.",
    ),
    DatasetSpec(
        name="brats23", title="BraTS 2023 (GLI, sequence translation)", task="translation", modality="MRI",
        channels=("t1n", "t1c", "t2w", "t2f"), outputs=("t1n", "t1c", "t2w", "t2f"),
        preset="mri_zscore", access="registration",
        where="https://www.synapse.org/#!Synapse:syn51156910 (BraTS 2023, adult glioma)",
        licence="BraTS 2023 data terms (not verified)",
        layout="""
ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/
  BraTS-GLI-00000-000/
    BraTS-GLI-00000-000-t1n.nii.gz   BraTS-GLI-00000-000-t1c.nii.gz
    BraTS-GLI-00000-000-t2w.nii.gz   BraTS-GLI-00000-000-t2f.nii.gz
    BraTS-GLI-00000-000-seg.nii.gz
  BraTS-GLI-00002-000/ ...
""",
        layout_source="WinstonHuTiger/BraSyn_tutorial README; release Downstream/RECON (one sequence in, four out, "
                      "masked MSE, SSIM/PSNR/MSE inside the brain)",
    ),
    # ---------------------------------------------------------------- PET downstream
    DatasetSpec(
        name="autopet", title="AutoPET (FDG-PET-CT-Lesions)", task="segmentation", modality="PET",
        channels=("SUV",), labels={0: "background", 1: "lesion"}, outputs=("lesion",),
        preset="pet_zscore", access="open",
        where="https://fdat.uni-tuebingen.de/records/wf9fy-txq84 (NIfTI release); TCIA doi 10.7937/gkr0-xv29 (DICOM)",
        licence="TCIA data usage policy (not verified)",
        layout="""
FDG-PET-CT-Lesions/
  PETCT_0011f3deaf/
    <study date folder>/
      SUV.nii.gz  CTres.nii.gz  CT.nii.gz  PET.nii.gz  SEG.nii.gz   (SEG: 1 lesion)
  fdg_metadata.csv
or autoPET III/IV's nnU-Net layout (FDG studies read, PSMA left out):
imagesTr/
  fdg_0011f3deaf_<study>_0000.nii.gz   (CT, on the PET grid)
  fdg_0011f3deaf_<study>_0001.nii.gz   (SUV)
labelsTr/
  fdg_0011f3deaf_<study>.nii.gz        (1 lesion)
""",
        layout_source="Gatidis et al., Sci Data 2022 (doi 10.1038/s41597-022-01718-3); lab-midas/TCIA_processing "
                      "tcia_dicom_to_nifti.py; autoPET III's nnU-Net layout: the challenge's PSMA converter README "
                      "(imagesTr <case>_0000 CT, _0001 SUV; labelsTr) and nnU-Net's Dataset221_AutoPETII_2023.py",
        paper=(PaperScore("s2dc", 1.0, 46.47, "poster Table 2"),
               PaperScore("lg", 1.0, 45.72, "poster Table 2"),
               PaperScore("lg_p2p", 1.0, 45.85, "poster Table 2"),
               PaperScore("lg_p2s", 1.0, 46.23, "poster Table 2")),
        notes="Open but large and without a published checksum: download by hand. The PET encoder reads "
              "SUV only (one channel); CTres is on the same grid if a two-channel variant is wanted.",
    ),
    DatasetSpec(
        name="adni", title="ADNI PET (AD vs CN)", task="classification", modality="PET",
        channels=("PET",), outputs=("CN", "AD"), preset="pet_zscore", access="registration",
        where="https://adni.loni.usc.edu (apply), then https://ida.loni.usc.edu (download)",
        licence="ADNI data use agreement (no redistribution)",
        layout="""
ADNI/                (the PET collection only, downloaded from IDA as NIfTI; DICOM: convert with dcm2niix)
  002_S_0295/<series description>/<acquisition date>/I<image id>/*.nii
  ...
ADNIMERGE.csv      (or ADNIMERGE_<date>.csv) PTID, VISCODE, DX_bl (CN/SMC/EMCI/LMCI/AD): the baseline row
""",
        layout_source="LONI IDA download layout (ADNI/<subject>/<description>/<date>/<image id>); ADNIMERGE.csv",
        notes="The release has no ADNI fine-tuning code: classes CN vs AD from DX_bl are our reading.",
    ),
    DatasetSpec(
        name="udpet", title="UDPET (ultra-low-dose PET)", task="reconstruction", modality="PET",
        channels=("low_dose",), outputs=("full_dose",), preset="pet_zscore", access="registration",
        where="https://udpet-challenge.github.io (sign its Data Transfer Agreement and e-mail it back for the link)",
        licence="UDPET Data Transfer Agreement (research use)",
        layout="""
SiemensVisionQuadra/ (or uExplorer/)
  Subject_115-117/<exam>/      (a Subject_a-b folder is a batch of patients; <exam> is one patient's exam)
    Full_dose/   1-2 dose/   1-4 dose/   1-10 dose/   1-20 dose/   1-50 dose/   1-100 dose/
                 (released as DICOM: convert each folder to one NIfTI with dcm2niix first)
""",
        layout_source="third-party UDPET loaders (folder names not verified against the challenge's own page, "
                      "udpet-challenge/udpet-challenge.github.io dataset.md, which names no folders)",
        notes="Low dose = one dose-reduction folder (default 1-4 dose), target = Full_dose. The challenge's page "
              "lists dose-reduction factors 4, 10, 20, 50 and 100 besides the full dose (1-2 dose only in older "
              "releases, per third-party loaders); uEXPLORER exams have been seen with other folder names "
              "('... WB DRF_4', '... WB normal'): rename them to the layout above (not verified).",
    ),
)

REGISTRY: Mapping[str, DatasetSpec] = MappingProxyType({s.name: s for s in _SPECS})
#: The ten-dataset averages the poster prints (method -> %), and the ten datasets they average over (a dataset added
#: to the registry is not one of them: an average that includes it is not the poster's quantity).
PAPER_AVERAGE: Mapping[str, float] = MappingProxyType({"scratch": 77.93, "voco": 80.65, "s2dc": 81.43})
PAPER_AVERAGE_DATASETS: tuple[str, ...] = ("btcv", "msd_liver", "msd_lung", "msd_spleen", "cc_ccii", "brats21",
                                           "brats23", "autopet", "adni", "udpet")


def get(name: str) -> DatasetSpec:
    """The spec of ``name``; an unknown name raises :class:`UnknownDatasetError` listing the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownDatasetError(f"unknown dataset {name!r}; the registry has {sorted(REGISTRY)}") from None


def names(task: str | None = None, modality: str | None = None) -> list[str]:
    """Registry names, in registry order, optionally of one task and/or modality."""
    return [s.name for s in _SPECS if (task is None or s.task == task) and (modality is None or s.modality == modality)]


def downstream_names() -> list[str]:
    """The ten downstream datasets."""
    return [s.name for s in _SPECS if s.downstream]


def pool_for(modality: str) -> str:
    """The pretraining pool of a modality."""
    pools = names(task="pretraining", modality=modality)
    if len(pools) != 1:
        raise UnknownDatasetError(f"no pretraining pool for modality {modality!r}; modalities are {MODALITIES}")
    return pools[0]


def check_selection(where: str, datasets: Mapping[str, Mapping], experiments: list[str], modalities: list[str],
                    twins: tuple[str, ...], converters: tuple[str, ...]) -> None:
    """Check a scale's choice of datasets (params.yaml ``scales.<scale>``, named ``where``): every dataset is a
    registry name, a synthetic one has a twin (``twins``), a real one a converter of its release (``converters``),
    the experiments name downstream datasets of the scale and each modality's pool is among them. Raises
    ``ValueError`` naming the key."""
    for name, choice in datasets.items():
        if name not in REGISTRY:
            raise ValueError(f"{where}.datasets.{name}: not a registry dataset; `s2dc datasets` lists them: {sorted(REGISTRY)}")
        if choice.get("source") == "synthetic" and name not in twins:
            raise ValueError(f"{where}.datasets.{name}: there is no synthetic twin of {name} yet "
                             f"(twins: {list(twins)}); use source: real")
        if choice.get("source") == "real" and name not in converters:
            raise ValueError(f"{where}.datasets.{name}: there is no converter of {name}'s release yet (converters: "
                             f"{list(converters)}; a new layout needs one in s2dc/data/sources)")
    for name in experiments:
        if name not in datasets:
            raise ValueError(f"{where}.experiments.datasets names '{name}', which is not in {where}.datasets {sorted(datasets)}")
        if not get(name).downstream:
            raise ValueError(f"{where}.experiments.datasets names the pretraining pool '{name}'")
    for modality in modalities:
        if pool_for(modality) not in datasets:
            raise ValueError(f"{where}.pretrain.modalities has {modality}, but its pool '{pool_for(modality)}' "
                             f"is not in {where}.datasets")
