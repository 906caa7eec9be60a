"""Fine-tuning options a user did not give, taken from what knows them: the network's sizes from the encoder file
(``model.init``), the intensity normalisation from the dataset's registry preset (as ``s2dc probe`` does), else
from the encoder's pretraining. Works on the raw ``{section: {field: value}}`` options, before they are checked."""

from __future__ import annotations

from pathlib import Path

from ..data.datalist import read_datalist, registry_spec
from ..data.preprocess_config import PreprocessConfig
from ..export import encoder_plan
from ..train.finetune_config import ARCHITECTURE

#: ``preprocess.*`` options that define the intensity normalisation (one set, from one source).
INTENSITY = ("intensity", "a_min", "a_max")


def fill_finetune_defaults(values: dict) -> tuple[dict, list[str]]:
    """``values`` with the architecture and intensity options filled in where absent; returns it (a new dict) and
    one line per filled group saying where it came from."""
    values = {section: dict(fields or {}) for section, fields in values.items()}
    model, preprocess = values.setdefault("model", {}), values.setdefault("preprocess", {})
    notes = []
    init = model.get("init", "scratch")
    plan = encoder_plan(init) if init != "scratch" else None
    if plan is not None:
        taken = {k: plan["encoder"][k] for k in ARCHITECTURE if k not in model and k in plan["encoder"]}
        model.update(taken)
        if taken:
            notes.append(f"network sizes from '{init}': " + ", ".join(f"{k}={v}" for k, v in taken.items()))
    if not any(k in preprocess for k in INTENSITY):
        source = values.get("data", {}).get("source")
        spec = registry_spec(read_datalist(source)) if source and Path(source).is_file() else None
        if spec is not None:
            preprocess.update(PreprocessConfig.from_preset(spec.preset).intensity_fields())
            notes.append(f"intensity: preset '{spec.preset}' of registry dataset {spec.name}")
        elif plan is not None and plan["preprocess"]:
            preprocess.update(PreprocessConfig(**plan["preprocess"]).intensity_fields())
            notes.append(f"intensity: the pretraining's of '{init}' ({preprocess['intensity']})")
    return values, notes
