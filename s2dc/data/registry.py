"""The dataset registry: with its entries (:mod:`s2dc.data.datasets`), the only place a dataset of the benchmark is
named.

Each of the paper's ten downstream datasets and three pretraining pools (method.md §6) is one
:class:`DatasetSpec`: its task, modality, input channels, what is predicted, metrics, intensity
preset, how the real data is obtained (open download or registration, licence, official on-disk
layout with the source that documents it) and the poster's numbers where it prints them. The
workflow, the command line and the report read it; nothing else hard-codes a dataset name, a class
count or a task.

Facts marked "not verified" in a spec's ``notes`` could not be checked against the data owner's
own pages; the sources are those named in ``layout_source``.

The entries themselves are data and live in :mod:`s2dc.data.datasets`: adding or editing one changes no job's code
hash; each job that reads an entry carries its :func:`spec_digest` (the report's tables, :func:`report_digest`) instead.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from dataclasses import dataclass, field, fields, is_dataclass
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


#: The fine-tuning options' section of each task that has one of its own, and the tasks that read
#: ``data.input_channel``: what the workflow checks params.yaml with before any job, without importing the task
#: modules (torch, ~3 s), which declare the same (``options_section``, ``picks_input_channel``; a test compares them).
TASK_OPTION_SECTIONS: Mapping[str, str] = MappingProxyType({
    "segmentation": "segment",
    "classification": "classify",
    "translation": "translate",
})
INPUT_CHANNEL_TASKS = ("translation",)


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


from .datasets import SPECS as _SPECS  # noqa: E402  (the entries: data, read after the classes they are made of)

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


#: Fields of an entry that only people read (``s2dc datasets``, a missing release's instructions, the report's poster
#: column, which :func:`report_digest` counts): left out of :func:`spec_digest`, so that correcting them reruns no job.
DOCUMENTATION_FIELDS = ("title", "where", "licence", "layout", "layout_source", "paper", "notes")


def spec_digest(name: str) -> str:
    """SHA-256 of what the jobs read of dataset ``name``'s entry (every field but :data:`DOCUMENTATION_FIELDS`, in a
    canonical JSON): a param of each job that reads the entry, and part of a fine-tuning's identity, so that editing
    one dataset's entry reruns the jobs of that dataset, and only them (the entries are data, which no code hash
    counts: :data:`s2dc.fingerprint.DATA_MODULES`)."""
    read = {k: v for k, v in _plain(get(name)).items() if k not in DOCUMENTATION_FIELDS}
    return hashlib.sha256(json.dumps(read, sort_keys=True).encode()).hexdigest()


def report_digest(datasets) -> str:
    """SHA-256 of what the tables and plots read of the registry: the entries of ``datasets`` (the runs' rows) and
    the poster's numbers of every entry (Table 1 is gathered from them all). A dataset added without poster numbers,
    or one the report does not show, leaves it unchanged."""
    shown = [[name, spec_digest(name)] for name in sorted(set(datasets))]
    posters = [[s.name, _plain(s.paper)] for s in REGISTRY.values() if s.paper]
    return hashlib.sha256(json.dumps([shown, posters]).encode()).hexdigest()


def _plain(value):
    """A JSON-able form of an entry: a dataclass as ``{field: value}``, a mapping as its ``[key, value]`` pairs in
    order (label values stay integers, the regions keep the outputs' order), a tuple as a list."""
    if is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **{f.name: _plain(getattr(value, f.name)) for f in fields(value)}}
    if isinstance(value, Mapping):
        return [[_plain(k), _plain(v)] for k, v in value.items()]
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


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
