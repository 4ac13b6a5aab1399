"""How an image becomes the network's input: one value, decided once and carried whole.

The plan (or the user's preset) decides it; the scan's decode check, the preprocess cache, the
checkpoint, `eval` and `predict` all take it as it is, so no two of them can disagree on a size, the
breast crop or the normalisation. Plain Python: the wizard plans at start-up without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# x -> (x - NORM_MEAN) / NORM_STD maps the windowed [0, 1] range to [-2, 2] (data/dataset.py)
NORM_MEAN = 0.5
NORM_STD = 0.25
# data/dicom.py: the file's VOI LUT / window when it has a usable one, else a robust percentile
# window over the breast (16-bit PNG the same; 8-bit PNG / JPEG are taken as windowed already)
WINDOW = "voi_lut_else_percentile"


@dataclass(frozen=True)
class Preprocessing:
    img_size: int
    crop_breast: bool = True
    mean: float = NORM_MEAN
    std: float = NORM_STD
    window: str = WINDOW

    @classmethod
    def of(cls, config: Any) -> "Preprocessing":
        """The preprocessing a TrainConfig trains with."""
        return cls(int(config.img_size), bool(config.crop_breast))

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> "Preprocessing":
        """What a checkpoint was trained with; checkpoints from before the crop existed did not crop."""
        norm = state.get("normalization") or {}
        return cls(int(state["img_size"]), bool(state.get("crop_breast", False)),
                   float(norm.get("mean", NORM_MEAN)), float(norm.get("std", NORM_STD)),
                   str(state.get("window", WINDOW)))

    @property
    def canonical_side(self) -> bool:
        """Every image has its chest wall on the left (the breast crop flips right breasts): an
        augmentation must not flip it back, or training sees a side evaluation never does."""
        return self.crop_breast

    def checkpoint_fields(self) -> dict[str, Any]:
        """The keys a checkpoint records (eval / predict preprocess exactly as training did)."""
        return {"img_size": self.img_size, "crop_breast": self.crop_breast, "in_channels": 1,
                "normalization": {"mean": self.mean, "std": self.std}, "window": self.window}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
