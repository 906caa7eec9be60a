"""The encoder's sizes (:class:`EncoderConfig`): plain values, checked, with no torch or MONAI import (the workflow
validates them at start); :mod:`.encoder` builds the network from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


#: The widest attention window: each block holds a (2w-1)^3 table of relative position biases per head, so a wider one
#: only ran out of memory (or overflowed torch's sizes, with a TypeError traceback); SwinUNETR's is 7.
MAX_WINDOW = 64


#: What each kind of size is called in a message (the type of its default).
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list of integers"}


def _of_kind(value, default) -> bool:
    """Whether a recorded size ``value`` is of the kind of its field's ``default`` (a bool is no integer here)."""
    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return integer(value)
    if isinstance(default, float):
        return integer(value) or isinstance(value, float)
    return isinstance(value, (list, tuple)) and all(integer(v) for v in value)


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the Swin encoder (release values by default: SwinViT-B of SwinUNETR v2).

    ``token_stage`` selects which of the five hidden states (0 = patch embedding, 4 = last stage)
    gives the tokens used for patch matching; stage ``s`` has ``feature_size * 2**s`` channels and
    a stride of ``patch_size * 2**s`` voxels.
    """

    in_channels: int = 1
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 2
    token_stage: int = 4
    drop_path_rate: float = 0.0
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(
                f"encoder.depths and encoder.num_heads need 4 entries (one per Swin stage), "
                f"got {list(self.depths)} and {list(self.num_heads)}"
            )
        if self.feature_size < 12 or self.feature_size % 12 != 0:
            raise ValueError(f"encoder.feature_size must be a positive multiple of 12 (SwinUNETR: divisible by 12), "
                             f"got {self.feature_size}")
        for name in ("in_channels", "window_size", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder.{name} must be >= 1, got {getattr(self, name)}")
        if self.window_size > MAX_WINDOW:
            raise ValueError(f"encoder.window_size must be <= {MAX_WINDOW} (tokens per axis; a window wider than the "
                             f"token grid is cut to it), got {self.window_size}")
        for name in ("depths", "num_heads"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"encoder.{name} must be >= 1 each, got {list(getattr(self, name))}")
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"encoder.drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        if not 0 <= self.token_stage <= 4:
            raise ValueError(f"encoder.token_stage must be in 0..4, got {self.token_stage}")
        for stage, heads in enumerate(self.num_heads):
            if (self.feature_size * 2**stage) % heads:
                raise ValueError(
                    f"encoder.num_heads[{stage}]={heads} does not divide the stage width "
                    f"{self.feature_size * 2**stage}"
                )

    @classmethod
    def recorded(cls, sizes, where: str) -> "EncoderConfig":
        """The sizes a file records (``where``: the file and key, for the message); ValueError naming unknown keys
        or a record that is no mapping."""
        if not isinstance(sizes, dict):
            raise ValueError(f"{where} is {type(sizes).__name__}; expected the encoder sizes as a mapping")
        unknown = sorted(set(sizes) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{where} holds unknown key(s) {unknown}; expected encoder sizes "
                             f"{sorted(cls.__dataclass_fields__)}")
        for name, value in sizes.items():
            if not _of_kind(value, cls.__dataclass_fields__[name].default):
                raise ValueError(f"{where}: '{name}' is {value!r}; expected "
                                 f"{_KIND_NAMES[type(cls.__dataclass_fields__[name].default)]}")
        return cls(**sizes)

    @property
    def token_dim(self) -> int:
        """Channels of the matching tokens."""
        return self.feature_size * 2**self.token_stage

    @property
    def global_dim(self) -> int:
        """Channels of the last stage (pooled for the global embedding)."""
        return self.feature_size * 2**4

    @property
    def token_stride(self) -> int:
        """Voxels per token along each axis at ``token_stage``."""
        return self.patch_size * 2**self.token_stage

    @property
    def min_input_multiple(self) -> int:
        """Every spatial size of an encoder input must be a multiple of this."""
        return self.patch_size * 2**4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        return d
