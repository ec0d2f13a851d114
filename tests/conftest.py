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


@pytest.fixture
def varied_model():
    """A tiny random SegNet (seed 0) whose argmax varies over the image (the plain random one predicts one
    class): classifier bias zero, BatchNorm gains x 3; wrapped as a LoadedModel."""
    import torch
    from torch import nn

    from napari_octseg.models import LoadedModel, SegNet, SegNetConfig

    torch.manual_seed(0)
    net = SegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    with torch.no_grad():
        net.classifier.bias.zero_()
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.mul_(3)
    return LoadedModel(model=net, source="<varied test model>")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint file of a random, very small SegNet (seed 0, classifier bias zero, so it predicts a
    mix of classes), whose training record holds a long ``history`` (summaries must leave it out)."""
    import torch

    from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint

    torch.manual_seed(0)
    net = SegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    with torch.no_grad():
        net.classifier.bias.zero_()
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, net, training={"data": "none (random test model)", "epochs": 2, "history": list(range(3000))})
    return path


@pytest.fixture
def oct_inputs(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Folder ``in`` with ``vol.npy`` (3, 40, 36) float32, ``bscan.npy`` (33, 47) uint8 and ``stack.tif``
    (2, 32, 32) uint8: a volume, a single B-scan and a TIFF stack, random content."""
    import tifffile

    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "vol.npy", rng.random((3, 40, 36)).astype(np.float32))
    np.save(folder / "bscan.npy", (rng.random((33, 47)) * 255).astype(np.uint8))
    tifffile.imwrite(folder / "stack.tif", (rng.random((2, 32, 32)) * 255).astype(np.uint8))
    return folder


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """Every notification a widget would show through ``_napari._common.report_error`` (GUI tests)."""
    from napari_octseg._napari import _common

    shown: list[BaseException] = []
    monkeypatch.setattr(_common, "report_error", shown.append)
    return shown


@pytest.fixture(scope="session")
def bundled_model():
    """The bundled checkpoint on the CPU (skipped with a reason when the weights are not there)."""
    from napari_octseg.models import load_model

    try:
        return load_model(None, device="cpu")
    except Exception as exc:  # noqa: BLE001 - the weights are optional in a source checkout
        pytest.skip(f"bundled model unavailable: {exc}")
