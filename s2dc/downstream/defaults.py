"""Fine-tuning options a user did not give, taken from what knows them: the network's sizes from the encoder file
(``model.init``), the intensity normalisation from the dataset's registry preset (as ``s2dc probe`` does), else
from the encoder's pretraining. Works on the raw ``{section: {field: value}}`` options, before they are checked."""

from __future__ import annotations

from pathlib import Path

from ..data.datalist import read_datalist, registry_spec
from ..data.preprocess_config import PreprocessConfig
from ..export import encoder_plan, refuse_another_modality
from ..train.finetune_config import ARCHITECTURE

#: ``preprocess.*`` options that define the intensity normalisation (one set, from one source).
INTENSITY = ("intensity", "a_min", "a_max")
#: The normalisations in words, for the error that names them.
KINDS = {"ct": "a CT window", "zscore": "z-scored volumes", "zscore_volume": "volumes z-scored over every voxel"}


def refuse_another_normalisation(init: str, plan: dict | None, intensity: str, origin: str) -> None:
    """Raise ValueError when the encoder file ``init`` was pretrained on another kind of normalisation than
    ``intensity`` (a z-scoring MRI or PET encoder on a CT dataset's window, or the reverse): an encoder of another
    modality, which the fine-tuning would otherwise take without a word. Another window of the same kind stands."""
    pretrained = ((plan or {}).get("preprocess") or {}).get("intensity")
    if pretrained is None or pretrained == intensity:
        return
    raise ValueError(f"model.init '{init}' was pretrained on {KINDS.get(pretrained, pretrained)} ({pretrained}), but "
                     f"{origin} is {KINDS.get(intensity, intensity)} ({intensity}): an encoder of another modality? "
                     "Give the encoder of this dataset's modality, or choose the normalisation with "
                     "--preprocess.intensity to fine-tune this one anyway")


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
    given = [k for k in INTENSITY if k in preprocess]
    if "intensity" in given:
        return values, notes  # the user chose the normalisation; the window's bounds not given are the defaults
    source = values.get("data", {}).get("source")
    spec = registry_spec(read_datalist(source)) if source and Path(source).is_file() else None
    if spec is not None:
        base, origin = PreprocessConfig.from_preset(spec.preset).intensity_fields(), \
            f"preset '{spec.preset}' of registry dataset {spec.name}"
        refuse_another_normalisation(init, plan, base["intensity"], origin)
        refuse_another_modality(init, (plan or {}).get("modality"), spec,
                                "choose the normalisation with --preprocess.intensity to fine-tune this one anyway")
    elif plan is not None and plan["preprocess"]:
        base = PreprocessConfig(**plan["preprocess"]).intensity_fields()
        origin = f"the pretraining's of '{init}' ({base['intensity']})"
    else:
        return values, notes  # neither source knows: the options' defaults stand
    if base["intensity"] != "ct" and given:  # a window's bound on a normalisation without a window
        raise ValueError(f"preprocess.{given[0]} sets a CT window, but the intensity is {base['intensity']} "
                         f"({origin}): give --preprocess.intensity ct with it, or leave it out")
    filled = {k: v for k, v in base.items() if k not in preprocess}
    preprocess.update(filled)
    notes.append(f"intensity: {origin}" if not given else
                 "intensity: " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in filled.items())
                 + f" from {origin} (given: {', '.join(given)})")
    return values, notes
