"""Dataset scanning, validation report, DICOM decoding, cache, splits, fingerprint, demo, torch Dataset.

Names are imported lazily (PEP 562) so `import mammo_tui.data` stays cheap: pydicom, OpenCV and
scikit-learn load on first use, torch/albumentations only with `ImageDataset`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageRecord": "records", "Problem": "records", "ImageInfo": "records", "ValidationReport": "records",
    "ImageReadError": "records", "PROBLEM_KINDS": "records", "patient_digest": "records",
    "DatasetSpec": "sources", "scan_dataset": "sources",
    "read_image": "images", "resize_pad": "images", "probe_image": "images",
    "PreprocessCache": "cache", "load_images": "cache", "PREPROCESS_VERSION": "cache",
    "Split": "split", "train_val_split": "split", "kfold_splits": "split",
    "write_splits_csv": "split", "read_splits_csv": "split",
    "Fingerprint": "fingerprint", "fingerprint": "fingerprint",
    "make_demo_dataset": "demo", "demo_paths": "demo", "demo_class_counts": "demo",
    "ImageDataset": "dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value

