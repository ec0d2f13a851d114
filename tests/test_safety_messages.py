"""Issue 16, families 6-8: out-of-memory estimated up front, tracebacks turned into one line, right messages."""

from __future__ import annotations

import errno
import math
import subprocess

import numpy as np
import pytest
import tifffile
import torch
from _safety_helpers import one_error_line

from napari_octseg.cli import main
from napari_octseg.core.atomic import TEMP_SUFFIX
from napari_octseg.core.errors import InputError
from napari_octseg.models.device import select_device
from napari_octseg.models.memory import check_memory, estimate_memory


@pytest.fixture
def volume_files(tmp_path):
    labels = np.zeros((3, 48, 40), np.uint8)
    labels[:, 10:] = 1
    labels[:, 14:] = 2
    labels[:, 30:] = 7
    labels[:, 36:] = 8
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((3, 48, 40)).astype(np.float32))
    np.save(tmp_path / "corr.npy", labels)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return tmp_path


def _fails(capsys, argv, cmd):
    assert main([str(a) for a in argv]) == 1
    return one_error_line(capsys.readouterr().err, f"octseg {cmd}: error:")


# -- 6. memory estimated before the work -----------------------------------------------------------------------------


def test_estimate_grows_with_the_volume_and_the_batch():
    small = estimate_memory((4, 496, 512), 1)
    assert estimate_memory((16, 496, 512), 1) > small
    assert estimate_memory((4, 496, 512), 4) > 3 * small // 2
    assert estimate_memory((4, 496, 512), 1, widths=(64, 128, 256, 512, 512)) > 4 * small


def test_a_volume_no_machine_here_can_segment_is_refused_up_front():
    with pytest.raises(InputError, match=r"segmenting 1000 x 4096 x 4096 at batch size 4 needs about .*smaller batch"):
        check_memory((1000, 4096, 4096), 4)


@pytest.mark.parametrize("cmd", ["segment", "gradcam"])
def test_cli_refuses_before_segmenting_when_memory_is_short(volume_files, capsys, monkeypatch, tiny_checkpoint, cmd):
    from napari_octseg.core import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 20)
    out = volume_files / "out"
    argv = [cmd, volume_files / "img.npy", "--model", tiny_checkpoint, "--out", out, "--batch-size", "2"]
    line = _fails(capsys, argv, cmd)
    assert "needs about" in line and "--batch-size 1" in line
    # no output: only the run manifest's row saying the input failed
    assert {p.name for p in out.glob("*")} <= {"octseg-manifest.jsonl"} if out.exists() else True


def test_finetune_refuses_before_training_when_memory_is_short(volume_files, capsys, monkeypatch, tiny_checkpoint):
    from napari_octseg.core import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 20)
    d = volume_files
    argv = ["finetune", "--images", d / "img.npy", "--labels", d / "corr.npy", "--base", tiny_checkpoint]
    line = _fails(capsys, [*argv, "--out", d / "new.pt", "--device", "cpu"], "finetune")
    assert "fine-tuning on 3 x 48 x 40" in line and not (d / "new.pt").exists()


# -- 7. tracebacks -> one line -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 8, 40)])
def test_finetune_on_bscans_smaller_than_a_crop_is_one_line(tmp_path, capsys, tiny_checkpoint, shape):
    np.save(tmp_path / "img.npy", np.ones(shape, np.float32))
    np.save(tmp_path / "lab.npy", np.ones(shape, np.uint8))
    argv = ["finetune", "--images", tmp_path / "img.npy", "--labels", tmp_path / "lab.npy", "--base", tiny_checkpoint]
    line = _fails(capsys, [*argv, "--out", tmp_path / "new.pt", "--device", "cpu"], "finetune")
    assert "too small to learn from" in line and "diverged" not in line


@pytest.mark.parametrize("device", ["cpu:x", "cpu:0", "gpu", "cuda:one"])
def test_malformed_device_names_are_refused(device):
    with pytest.raises(InputError, match="unknown device"):
        select_device(device)


@pytest.mark.parametrize("cmd", ["segment", "gradcam"])
def test_segment_and_gradcam_have_device_choices(tmp_path, capsys, cmd):
    with pytest.raises(SystemExit) as info:
        main([cmd, "a.npy", "--out", str(tmp_path), "--device", "cpu:x"])
    assert info.value.code == 2
    assert "invalid choice: 'cpu:x'" in capsys.readouterr().err.splitlines()[-1]


def test_finetune_device_is_validated_before_anything_is_read(tmp_path, capsys):
    argv = ["finetune", "--images", tmp_path / "a.npy", "--labels", tmp_path / "b.npy", "--out", tmp_path / "c.pt"]
    line = _fails(capsys, [*argv, "--device", "cpu:x"], "finetune")
    assert "unknown device 'cpu:x'" in line


def test_replay_that_is_not_a_zip_is_one_line(volume_files, capsys, tiny_checkpoint):
    d = volume_files
    (d / "replay.npz").write_text("this is not a zip archive")
    argv = ["finetune", "--images", d / "img.npy", "--labels", d / "corr.npy", "--base", tiny_checkpoint]
    line = _fails(capsys, [*argv, "--out", d / "new.pt", "--replay", d / "replay.npz", "--device", "cpu"], "finetune")
    assert "replay.npz: not a readable .npz archive" in line


def test_full_disk_while_saving_a_checkpoint_is_no_space_left(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    from napari_octseg.cli import _os_error_text
    from napari_octseg.models import checkpoint
    from napari_octseg.models.registry import load_model

    real_open = open

    class _Full:
        def __init__(self, path, mode):
            self.fh = real_open(path, mode)
            self.path = path

        def write(self, data):
            self.fh.write(bytes(data)[:100])
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(checkpoint, "open", _Full, raising=False)
    model = load_model(tiny_checkpoint).model
    target = tmp_path / "disk"
    target.mkdir()
    with pytest.raises(OSError) as info:
        checkpoint.save_checkpoint(target / "new.pt", model)
    assert _os_error_text(info.value).endswith(": No space left on device")
    assert sorted(p.name for p in target.iterdir()) == []


def test_full_tmpfs_while_saving_a_checkpoint(tmp_path, tiny_checkpoint):
    from napari_octseg.models import checkpoint
    from napari_octseg.models.registry import load_model

    mount = tmp_path / "tiny_fs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the failing-write test covers the message")
    try:
        with pytest.raises(OSError) as info:
            checkpoint.save_checkpoint(mount / "new.pt", load_model(tiny_checkpoint).model)
        assert info.value.errno == errno.ENOSPC
        assert [p.name for p in mount.iterdir() if not p.name.endswith(TEMP_SUFFIX)] == []
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# -- 8. misleading messages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["0,0,0", "1e308,1,1", "-1,3.9,11", "nan,1,1"])
def test_thickness_refuses_an_unusable_scale(volume_files, capsys, scale):
    d = volume_files
    argv = ["thickness", d / "labels.tif", "--csv", d / "t.csv", "--etdrs", d / "e.csv", "--laterality", "OD"]
    line = _fails(capsys, [*argv, f"--scale={scale}"], "thickness")
    assert "--scale must be" in line and "laterality" not in line
    assert not (d / "t.csv").exists()


def test_thickness_refuses_an_unusable_sidecar_scale(volume_files, capsys):
    d = volume_files
    (d / "labels.json").write_text('{"scale_um": [0, 0, 0]}')
    line = _fails(capsys, ["thickness", d / "labels.tif", "--csv", d / "t.csv"], "thickness")
    assert "pixel spacing (0.0, 0.0, 0.0) µm is not usable" in line


@pytest.mark.parametrize("fovea", ["99,5", "1,-3", "1,40"])
def test_thickness_refuses_a_fovea_outside_the_scan(volume_files, capsys, fovea):
    d = volume_files
    argv = ["thickness", d / "labels.tif", "--csv", d / "t.csv", "--etdrs", d / "e.csv", "--scale", "120,3.9,11"]
    line = _fails(capsys, [*argv, "--laterality", "OD", "--fovea", fovea], "thickness")
    assert "lies outside the scan" in line
    assert not (d / "t.csv").exists() and not (d / "e.csv").exists()


def test_nan_base_model_says_so_not_diverged(volume_files, capsys, tiny_checkpoint):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["state_dict"]["classifier.weight"].fill_(math.nan)
    bad = volume_files / "nan.pt"
    torch.save(payload, bad)
    d = volume_files
    argv = ["finetune", "--images", d / "img.npy", "--labels", d / "corr.npy", "--base", bad]
    line = _fails(capsys, [*argv, "--out", d / "new.pt", "--device", "cpu"], "finetune")
    assert "holds NaN or infinite values" in line and "diverged" not in line


def test_string_version_says_it_is_not_an_integer(tiny_checkpoint, tmp_path, capsys):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["format_version"] = "1"
    bad = tmp_path / "v.pt"
    torch.save(payload, bad)
    np.save(tmp_path / "v.npy", np.zeros((1, 32, 32), np.float32))
    line = _fails(capsys, ["segment", tmp_path / "v.npy", "--model", bad, "--out", tmp_path / "o"], "segment")
    assert "format_version must be an integer; got str '1'" in line
