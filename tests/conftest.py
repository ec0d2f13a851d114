"""Shared fixtures: the real data folder (skipped with a reason when absent) and a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DUKE_DIR = SHARED_DATA / "duke_dme"
VOL_DIR = SHARED_DATA / "heyex_vol"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives outside the project)")
    return path


@pytest.fixture(scope="session")
def duke_dir() -> Path:
    """Folder with Duke DME ``Subject_NN.npz`` files."""
    return _require(DUKE_DIR)


@pytest.fixture(scope="session")
def vol_dir() -> Path:
    """Folder with the two genuine Heidelberg ``.vol`` files."""
    return _require(VOL_DIR)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_model():
    """A randomly initialised, very small SegNet wrapped as a LoadedModel (fast on CPU)."""
    import torch

    from napari_octseg.models import LoadedModel, SegNet, SegNetConfig

    torch.manual_seed(0)
    return LoadedModel(model=SegNet(SegNetConfig(widths=(4, 8, 8))).eval(), source="<tiny test model>")
