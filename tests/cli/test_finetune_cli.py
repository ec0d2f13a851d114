"""``octseg finetune`` end to end on a tiny synthetic volume and a tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy import toy_volume

from napari_octseg.cli import main
from napari_octseg.cli.finetune import select_bscans
from napari_octseg.core.errors import InputError
from napari_octseg.models import SegNet, SegNetConfig, load_checkpoint, save_checkpoint

torch.set_num_threads(1)


@pytest.fixture
def files(tmp_path):
    volume, labels = toy_volume(n=4)
    np.save(tmp_path / "scan.npy", volume.data)
    np.save(tmp_path / "labels.npy", labels)
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path / "base.pt", SegNet(SegNetConfig(widths=(4, 8, 8))), training={"data": "toy"})
    return tmp_path, base


def _args(tmp_path, base, *extra):
    return [
        "finetune",
        "--images",
        str(tmp_path / "scan.npy"),
        "--labels",
        str(tmp_path / "labels.npy"),
        "--base",
        str(base),
        "--out",
        str(tmp_path / "new.pt"),
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]


def test_cli_finetune_writes_a_new_checkpoint(files, capsys):
    tmp_path, base = files
    base_bytes = base.read_bytes()
    assert main(_args(tmp_path, base, "--bscans", "0,2")) == 0
    loaded = load_checkpoint(tmp_path / "new.pt")
    rec = loaded.training
    assert rec["bscans"] == [0, 2] and rec["epochs"] == 2
    assert rec["base_model"] == {"source": str(base), "training": {"data": "toy"}}
    assert rec["data"] == {"images": str(tmp_path / "scan.npy"), "labels": str(tmp_path / "labels.npy")}
    assert base.read_bytes() == base_bytes
    assert "saved" in capsys.readouterr().out

    # A second run refuses to overwrite without --force, and says so in one line.
    before = (tmp_path / "new.pt").read_bytes()
    assert main(_args(tmp_path, base, "--bscans", "1")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert (tmp_path / "new.pt").read_bytes() == before
    assert main(_args(tmp_path, base, "--bscans", "1", "--force")) == 0
    assert load_checkpoint(tmp_path / "new.pt").training["bscans"] == [1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bscans", "4"], "out of range"),
        (["--epochs", "0"], "--epochs"),
        (["--device", "tpu"], "unknown device"),
        ([], "labels have shape"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(files, capsys, extra, message):
    tmp_path, base = files
    if not extra:  # labels of another shape than the image
        np.save(tmp_path / "labels.npy", np.zeros((4, 64, 63), np.uint8))
    assert main(_args(tmp_path, base, *extra)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "new.pt").exists()


def test_default_bscan_selection_rule():
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[1, 2] = 3
    labels[3, 5] = 1
    assert select_bscans(labels, None, None) == [1, 3]
    auto = labels.copy()
    auto[3, 5] = 2
    assert select_bscans(labels, None, auto) == [3]
    assert select_bscans(labels, "0, 2", auto) == [0, 2]
    with pytest.raises(InputError):
        select_bscans(labels, None, labels)
    with pytest.raises(InputError):
        select_bscans(np.zeros((2, 4, 4), np.uint8), None, None)
