"""Shared fixtures.

- `demo_dataset` (session): a small synthetic DICOM dataset in the reference layout, generated once.
  Use `demo_dataset.csv` / `demo_dataset.dicom_root` (or unpack: `csv, root = demo_dataset`);
  `demo_dataset_size` is the `size` it was made with.
- `make_dicom`: writes a small DICOM file with chosen pixels and attributes.
- Every test session uses a temporary preprocess cache (MAMMO_TUI_CACHE), never ~/.cache, and a
  temporary config dir (MAMMO_TUI_CONFIG_DIR), never ~/.config, and one fixed digest secret
  (MAMMO_TUI_GROUP_SECRET_FILE), so splits are the same in every session.
- `tests/corpus.py`: run the CLI in a subprocess and check it fails cleanly (the bad-input corpus).
- `tiny_config` (session): a factory, `tiny_config(**overrides) -> TrainConfig`, of the CPU-sized
  training config the engine tests share (`TINY` on the demo preset); where a module needs it at
  import time (a helper, a module-level constant): `from conftest import TINY, make_tiny_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

DEMO_SIZE = 0.05  # A 4, B 18, C 42, D 17 images: 81 in all, generated in about a second
DEMO_SEED = 0

# CPU-sized training on the demo preset: resnet18 from scratch at 32 px, 2 batches of 16 an epoch, no
# augmentation, no early stop, images decoded in the test's own process. A few seconds an epoch.
TINY = {"arch": "resnet18", "pretrained": False, "img_size": 32, "batch_size": 16, "augment": False,
        "early_stop_patience": 0, "num_workers": 0, "max_batches_per_epoch": 2}


def make_tiny_config(**overrides):
    """The demo preset <- TINY <- overrides, as config.resolve makes it (an override of None is ignored)."""
    from mammo_tui import config

    return config.resolve("demo", {**TINY, **overrides})


class DemoDataset(NamedTuple):
    csv: Path  # labels.csv with AccessionNumber,Classification
    dicom_root: Path  # one folder per accession


@pytest.fixture(scope="session", autouse=True)
def _isolated_preprocess_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAMMO_TUI_CACHE", str(tmp_path_factory.mktemp("preprocess-cache")))
        patch.setenv("MAMMO_TUI_OFFLINE", "1")  # never probe the weights server from a test
        # the per-user secret of the patient digests lives here, never in the user's ~/.config
        patch.setenv("MAMMO_TUI_CONFIG_DIR", str(tmp_path_factory.mktemp("config-dir")))
        # one fixed digest secret for every session: the groups, so the splits, are the same in every
        # run of the suite (a fresh per-user secret would give other splits each time)
        secret = tmp_path_factory.mktemp("secret") / "group.secret"
        secret.write_text("5eed" * 16)
        secret.chmod(0o600)
        patch.setenv("MAMMO_TUI_GROUP_SECRET_FILE", str(secret))
        yield


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A torchvision resnet18 state dict file, passed as `weights` where a test needs a backbone
    that counts as pretrained (ImageNet weights cannot be downloaded here). Its values are random:
    tests use it to exercise freezing, warmup and restarts, never to show a defense works."""
    import torch
    from torchvision.models import resnet18

    path = tmp_path_factory.mktemp("weights") / "resnet18-standin.pth"
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def demo_dataset_size() -> float:
    return DEMO_SIZE


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    from mammo_tui.data.demo import demo_paths, make_demo_dataset

    csv_path = make_demo_dataset(tmp_path_factory.mktemp("demo"), size=DEMO_SIZE, seed=DEMO_SEED)
    return DemoDataset(*demo_paths(csv_path))


@pytest.fixture
def make_dicom():
    """make_dicom(path, pixels, photometric="MONOCHROME2", patient_id=None, bits_stored=12,
    pixel_data=True, transfer_syntax=None, **attributes) -> Path"""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def write(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", patient_id: str | None = None,
              bits_stored: int = 12, pixel_data: bool = True, transfer_syntax=None, **attributes) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.asarray(pixels, dtype=np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality = "MG"
        if patient_id is not None:
            ds.PatientID = patient_id
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        if pixel_data:
            ds.PixelData = pixels.tobytes()
            if transfer_syntax is not None:
                ds.compress(transfer_syntax)
        ds.save_as(path, enforce_file_format=True)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_demo(demo_dataset):
    """The session demo dataset as a DatasetSpec, ready for the engine (TrainRequest.dataset)."""
    from mammo_tui.data.sources import DatasetSpec

    return DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root))


@pytest.fixture(scope="session")
def tiny_config():
    """make_tiny_config: `tiny_config(**overrides) -> TrainConfig`, the shared tiny training config."""
    return make_tiny_config
