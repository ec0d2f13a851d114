"""Safety of the ``octseg`` command (issue 9): bad input, interruptions, crashes mid-write, consent.

Every ``octseg <cmd>`` given a bad file, bad labels, a model file that would run code or an absent
device must exit non-zero with exactly one ``octseg <cmd>: error: ...`` line on stderr, no traceback,
and no file (not even a temporary) in the output location. An interruption (Ctrl-C) or a crash while
writing leaves no partial output and keeps the files that were there before.
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_octseg.cli import main
from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint


class _WritesAFile:
    """Unpickling this would create ``path``: a model file that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad inputs shared by every case (read-only for the tests)."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    save_checkpoint(d / "tiny.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())
    payload = torch.load(d / "tiny.pt", weights_only=True)
    payload["training"] = {"note": _WritesAFile(str(d / "PAYLOAD_RAN"))}
    torch.save(payload, d / "evil.pt")
    (d / "foreign.pt").write_bytes(rng.bytes(5000))
    np.save(d / "vol.npy", rng.random((2, 32, 32)).astype(np.float32))
    np.save(d / "nan.npy", np.full((2, 32, 32), np.nan, np.float32))
    (d / "empty.npy").write_bytes(b"")
    (d / "foreign.vol").write_bytes(rng.bytes(3000))
    (d / "folder.tif").mkdir()
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, 8:29] = np.arange(1, 8).repeat(3)[None, :, None]
    labels[:, 29:] = 8
    np.save(d / "labels.npy", labels)
    np.save(d / "labels_shape.npy", labels[:, :16])
    big = labels.copy()
    big[0, 0, 0] = 12
    np.save(d / "labels_big.npy", big)
    np.save(d / "labels_neg.npy", labels.astype(np.int16) - 1)
    np.save(d / "labels_float.npy", labels.astype(np.float32) + 0.5)
    tifffile.imwrite(d / "labels_4d.tif", np.zeros((2, 2, 8, 8), np.uint8))
    return d


def _argv(
    cmd: str,
    d: pathlib.Path,
    out: pathlib.Path,
    image="vol.npy",
    labels="labels.npy",
    model="tiny.pt",
    device="cpu",
    extra=(),
) -> list[str]:
    """A full command line for ``cmd`` whose outputs all go under ``out``."""
    if cmd == "info":
        return ["info", str(d / image)]
    if cmd == "view":
        return ["view", str(d / image), "--no-widget"]
    if cmd in ("segment", "gradcam"):
        return [
            cmd,
            str(d / image),
            "--out",
            str(out),
            "--model",
            str(d / model),
            "--device",
            device,
            "--quiet",
            *extra,
        ]
    if cmd == "thickness":
        return [
            "thickness",
            str(d / labels),
            "--csv",
            str(out / "t.csv"),
            "--etdrs",
            str(out / "t_etdrs.csv"),
            "--scale",
            "100,3.9,11",
            "--laterality",
            "OD",
            "--quiet",
            *extra,
        ]
    if cmd == "evaluate":
        return ["evaluate", "--pred", str(d / labels), "--truth", str(d / "labels.npy"), "--csv", str(out / "e.csv")]
    if cmd == "finetune":
        return [
            "finetune",
            "--images",
            str(d / image),
            "--labels",
            str(d / labels),
            "--bscans",
            "0",
            "--base",
            str(d / model),
            "--out",
            str(out / "new.pt"),
            "--epochs",
            "1",
            "--device",
            device,
            "--quiet",
        ]
    raise AssertionError(cmd)


BAD_IMAGES = {
    "missing": "nope.vol",
    "foreign": "foreign.vol",
    "empty": "empty.npy",
    "nan": "nan.npy",
    "folder": "folder.tif",
}
BAD_LABELS = {
    "missing": "nope.npy",
    "empty": "empty.npy",
    "shape": "labels_shape.npy",
    "classes>9": "labels_big.npy",
    "negative": "labels_neg.npy",
    "float": "labels_float.npy",
    "nan": "nan.npy",
    "4-D": "labels_4d.tif",
}
BAD_MODELS = {"pickle payload": "evil.pt", "foreign bytes": "foreign.pt", "missing": "nope.pt"}

CASES = (
    [
        (cmd, f"image {k}", {"image": v})
        for cmd in ("info", "view", "segment", "gradcam", "finetune")
        for k, v in BAD_IMAGES.items()
    ]
    + [("thickness", f"labels {k}", {"labels": v}) for k, v in BAD_LABELS.items()]
    + [("evaluate", f"labels {k}", {"labels": v}) for k, v in BAD_LABELS.items()]
    + [("finetune", f"labels {k}", {"labels": v}) for k, v in BAD_LABELS.items() if k != "missing"]
    + [(cmd, f"model {k}", {"model": v}) for cmd in ("segment", "gradcam", "finetune") for k, v in BAD_MODELS.items()]
    + (
        [(cmd, "absent device cuda", {"device": "cuda"}) for cmd in ("segment", "gradcam", "finetune")]
        if not torch.cuda.is_available()
        else []
    )
    + [
        (
            "thickness",
            "labels shape differs from --image",
            {"extra": ["--image", "FILES/vol.npy"], "labels": "labels_shape.npy"},
        )
    ]
)


def _one_error_line(err: str, cmd: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"octseg {cmd}: error: "), lines[0]
    return lines[0]


def _files_under(folder: pathlib.Path) -> list[str]:
    """Every file (hidden temporaries included) under ``folder``, except the run manifest (a log of each input)."""
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir() and p.name != "octseg-manifest.jsonl"
    )


@pytest.mark.parametrize("cmd, what, opts", CASES, ids=[f"{c}-{w}" for c, w, _ in CASES])
def test_bad_input_is_one_line_exit_1_and_writes_nothing(files, tmp_path, capsys, cmd, what, opts):
    out = tmp_path / "out"
    opts = dict(opts)
    if "extra" in opts:
        opts["extra"] = [e.replace("FILES", str(files)) for e in opts["extra"]]
    before = {p: p.stat().st_mtime_ns for p in files.iterdir()}
    code = main(_argv(cmd, files, out, **opts))
    line = _one_error_line(capsys.readouterr().err, cmd)
    assert code == 1, line
    assert _files_under(out) == []
    assert not (files / "PAYLOAD_RAN").exists()
    assert {p: p.stat().st_mtime_ns for p in files.iterdir()} == before  # inputs untouched


@pytest.mark.parametrize("cmd", ["segment", "gradcam", "thickness", "evaluate"])
def test_output_folder_that_cannot_be_made_is_one_line(files, tmp_path, capsys, cmd):
    """An output location below a plain file (OSError) is a user problem: one line, no traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    code = main(_argv(cmd, files, blocker / "sub"))
    line = _one_error_line(capsys.readouterr().err, cmd)
    assert code == 1 and "a_file" in line
    assert blocker.read_text() == "keep me" and _files_under(tmp_path) == ["a_file"]


OUTPUTS = {
    "segment": ["vol.labels.tif", "vol.labels.json", "vol.qc.csv"],
    "gradcam": ["vol.gradcam.tif", "vol.gradcam.json"],
    "thickness": ["t.csv", "t_etdrs.csv"],
    "evaluate": ["e.csv"],
    "finetune": ["new.pt"],
}


@pytest.mark.parametrize("cmd, name", [(c, n) for c, names in OUTPUTS.items() for n in names])
def test_existing_output_is_never_overwritten_without_force(files, tmp_path, capsys, cmd, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the user's earlier result")
    code = main(_argv(cmd, files, out))
    line = _one_error_line(capsys.readouterr().err, cmd)
    assert code == 1 and "exists" in line
    assert _files_under(out) == [name]
    assert (out / name).read_bytes() == b"the user's earlier result"


# -- interruptions and crashes while working or writing ----------------------------------------------------------


def _interrupt_after_first_event(real):
    """Wrap a progress-generator function so that Ctrl-C arrives after its first event."""

    def wrapped(*args, **kwargs):
        gen = real(*args, **kwargs)
        yield next(gen)
        gen.close()
        raise KeyboardInterrupt

    return wrapped


@pytest.mark.parametrize(
    "cmd, module, name",
    [
        ("segment", "napari_octseg.inference", "segment"),
        ("gradcam", "napari_octseg.explain", "gradcam"),
        ("thickness", "napari_octseg.core.thickness", "analyse"),
        ("finetune", "napari_octseg.learning.finetune", "finetune"),
    ],
)
def test_interrupt_during_work_keeps_no_output(files, tmp_path, capsys, monkeypatch, cmd, module, name):
    import importlib

    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, name, _interrupt_after_first_event(getattr(mod, name)))
    out = tmp_path / "out"
    assert main(_argv(cmd, files, out)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"octseg {cmd}: interrupted" in err
    assert _files_under(out) == []


def test_interrupt_on_the_second_input_keeps_the_first_complete(files, tmp_path, capsys, monkeypatch):
    import napari_octseg.inference as inference

    real, calls = inference.segment, []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        return (_interrupt_after_first_event(real) if len(calls) == 2 else real)(*args, **kwargs)

    monkeypatch.setattr(inference, "segment", second_interrupted)
    out = tmp_path / "out"
    (tmp_path / "b.npy").write_bytes((files / "vol.npy").read_bytes())
    argv = _argv("segment", files, out)
    argv.insert(2, str(tmp_path / "b.npy"))
    assert main(argv) == 130
    assert _files_under(out) == ["vol.labels.json", "vol.labels.tif", "vol.qc.csv"]
    assert tifffile.imread(out / "vol.labels.tif").shape == (2, 32, 32)


def _half_then(exc: BaseException, method: str):
    """A replacement for ``Path.<method>`` that writes half of its data, then fails with ``exc``."""
    real = getattr(pathlib.Path, method)

    def broken(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise exc

    return broken


DISK_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("exc, code", [(DISK_FULL, 1), (KeyboardInterrupt(), 130)], ids=["disk-full", "ctrl-c"])
@pytest.mark.parametrize("cmd", ["segment", "thickness", "evaluate"])
def test_crash_mid_write_keeps_the_previous_files_and_no_temporary(
    files, tmp_path, capsys, monkeypatch, cmd, exc, code
):
    """With --force, a write that dies half-way leaves the files it was replacing byte-identical."""
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUTS[cmd]:
        (out / name).write_bytes(f"earlier {name}".encode())
    monkeypatch.setattr(pathlib.Path, "write_text", _half_then(exc, "write_text"))
    argv = _argv(cmd, files, out) + ["--force"]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 1:
        assert "No space left on device" in _one_error_line(err, cmd)
    assert _files_under(out) == sorted(OUTPUTS[cmd])
    for name in OUTPUTS[cmd]:
        assert (out / name).read_bytes() == f"earlier {name}".encode()


def test_segment_tiff_writer_dying_keeps_the_previous_files(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUTS["segment"]:
        (out / name).write_bytes(b"earlier")

    def dying_imwrite(path, data, **kwargs):
        pathlib.Path(path).write_bytes(b"II*\x00 half a TIFF")
        raise DISK_FULL

    monkeypatch.setattr(tifffile, "imwrite", dying_imwrite)
    assert main(_argv("segment", files, out) + ["--force"]) == 1
    _one_error_line(capsys.readouterr().err, "segment")
    assert _files_under(out) == sorted(OUTPUTS["segment"])
    assert all((out / name).read_bytes() == b"earlier" for name in OUTPUTS["segment"])


def test_finetune_never_modifies_its_inputs_and_never_the_base_model(files, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    out = tmp_path / "out"
    assert main(_argv("finetune", files, out)) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert _files_under(out) == ["new.pt"]
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before
    # the new checkpoint can never be written over the base model, even with --force
    argv = _argv("finetune", files, out)
    argv[argv.index("--out") + 1] = str(files / "tiny.pt")
    assert main(argv + ["--force"]) == 1
    _one_error_line(capsys.readouterr().err, "finetune")
    assert (files / "tiny.pt").read_bytes() == before["tiny.pt"]


# -- the real console entry point -------------------------------------------------------------------------------


def test_console_entry_point_prints_one_line_and_no_traceback(files, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = _argv("thickness", files, out, labels="labels_big.npy")
    proc = subprocess.run(
        [sys.executable, "-m", "napari_octseg", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 1
    assert "label values must be within 0..9" in _one_error_line(proc.stderr, "thickness")
    assert _files_under(out) == []
