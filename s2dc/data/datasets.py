"""The benchmark's datasets, one :class:`~s2dc.data.registry.DatasetSpec` each: data, not code.

The entries of the dataset registry (:mod:`s2dc.data.registry`, which defines what an entry is, checks it and is
how every other module reads them). This module is the one place an entry is written: adding a dataset (MSD Task07
Pancreas, say) or editing one's entry changes no job's code hash (the code fingerprint leaves this module out,
:data:`s2dc.fingerprint.DATA_MODULES`); the jobs and runs that read an entry carry its own digest
(:func:`s2dc.data.registry.spec_digest`) and rerun when it changes, and only they. Keep it data: helpers that
build entries belong here only as far as their result is the entry (its digest counts what they made).

Import it through :mod:`s2dc.data.registry` (``registry.REGISTRY``, ``registry.get``): it reads the registry's
classes, and the registry reads it.
"""

from __future__ import annotations

from .registry import Archive, DatasetSpec, PaperScore

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

SPECS: tuple[DatasetSpec, ...] = (
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
              "nested once more, NCP/NCP/... or NC/Normal/..., as the release's prc_data.py reads it, is accepted too, "
              "but not beside patient folders of the same class). unzip_filenames.csv beside them is read: a scan it "
              "lists that is missing or holds another number of slices (an unzip stopped midway, a zip not extracted) "
              "is refused with its zip file; remove a zip's rows to leave its scans out.",
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
TrainingData/        (any name: the folder BraTS2021_Training_Data.tar is extracted into; the tar has no top folder;
                      or RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/, the folder of Synapse's training zip)
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
        notes="Predicts the three overlapping regions (sigmoid per channel), scored by Dice per region. Its cases are "
              "BraTS 2023 GLI's under other ids: BraTS 2023's BraTS2023_2017_GLI_Mapping.xlsx beside the case folders "
              "splits them by patient (a patient's time points on one side); without it, case by case.",
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
        notes="The release has no ADNI fine-tuning code: classes CN vs AD from DX_bl are our reading. Download one "
              "tracer (a download whose description folders name two, e.g. FDG's 'Coreg,_Avg,...' beside "
              "'AV45_Coreg,_Avg,...', is refused naming them).",
    ),
    DatasetSpec(
        name="udpet", title="UDPET (ultra-low-dose PET)", task="reconstruction", modality="PET",
        channels=("low_dose",), outputs=("full_dose",), preset="pet_zscore", access="registration",
        where="https://udpet-challenge.github.io (sign its Data Transfer Agreement and e-mail it back for the link)",
        licence="UDPET Data Transfer Agreement (research use)",
        layout="""
SiemensVisionQuadra/
  Subject_115-117/<exam>/      (a Subject_a-b folder is a batch of patients; <exam> is one patient's exam)
    Full_dose/   1-2 dose/   1-4 dose/   1-10 dose/   1-20 dose/   1-50 dose/   1-100 dose/
uExplorer/
  uExplorerPART10/<exam e.g. Anonymous_ANO_20220224_1744219_121048>/
    2.886 x 600 WB NORMAL/   2.886 x 600 WB D4/ (or ... WB DRF_4/)   ... WB D10/   ...
                 (released as DICOM: convert each dose folder to one NIfTI with dcm2niix first)
(0 to 2 folders between a scanner's or hospital's folder, e.g. Shanghai-Ruijin-Hospital-2023/, and its exams)
""",
        layout_source="third-party UDPET loaders: mayalevital/LDPT LDPT_main_1.py (both scanners' paths), "
                      "junqiangchen/Ultra-low-Dose-PET-Imaging-Challenge dataprocess/lowdosePet2022data3dprepare.py, "
                      "wo-niubi/2023UDPET dataset/dicom2niigz.py, yqx7150/RED Tool_DataPrepare.py, "
                      "pcabrales/low_dose_pet_235 train_explorer.py, KUL-recon-lab/2025_ud_pet_kul data.py (the "
                      "challenge's own page, udpet-challenge/udpet-challenge.github.io dataset.md, names no folders)",
        notes="Low dose = one dose-reduction folder (default 1-4 dose, which a uEXPLORER exam names '... WB D4' or "
              "'... WB DRF_4'), target = the full dose (Full_dose, or '... WB NORMAL'). The challenge's page lists "
              "dose-reduction factors 4, 10, 20, 50 and 100 besides the full dose (1-2 dose only in older releases, "
              "per third-party loaders). The 2025 test set's flat Anonymous-NN_DRF-<k>.nii.gz files (low doses "
              "only) are refused. Split: exams that share a Subject_a-b folder, a uEXPLORER export's trailing number "
              "or a Quadra exam's acquisition date stay on one side (the 2025 training set holds some acquisitions "
              "under two exam ids).",
    ),
)
