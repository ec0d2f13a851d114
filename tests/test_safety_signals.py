"""Issue 16, families 3-5 and 7: signals, concurrent writers, outputs that are inputs, start-up and file names.

SIGTERM mid-write exits like Ctrl-C (143, one line, no temporary); SIGKILL leaves a temporary that can
never pass for an output and that the next run for that output removes; two runs writing the same output
without ``--force``: one wins, the other gets one line; an output that resolves to an input is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _safety_helpers import CHILD, ROOT, one_error_line, run_octseg

from napari_octseg.cli import main
from napari_octseg.core.atomic import TEMP_SUFFIX, atomic_paths, atomic_write_text, remove_stale_temporaries
from napari_octseg.core.errors import OctsegError

#: Child prelude: ``tifffile.imwrite`` writes, touches $OCTSEG_TEST_MARK, then sleeps (a slow disk).
SLOW_WRITER = """
import os, pathlib, time, tifffile
_real = tifffile.imwrite
def _slow(path, *a, **k):
    _real(path, *a, **k)
    pathlib.Path(os.environ["OCTSEG_TEST_MARK"] + str(os.getpid())).touch()
    time.sleep(float(os.environ.get("OCTSEG_TEST_SLEEP", "120")))
tifffile.imwrite = _slow
"""


def _spawn(args, prelude="", **env):
    child_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "OCTSEG_TEST_RSS": os.devnull,
        "OCTSEG_TEST_PRELUDE": prelude,
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
        # a parent started in the background may ignore SIGINT; the child must see the default, as in a shell
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(predicate, timeout=900.0):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.1)


@pytest.fixture
def job(tmp_path, tiny_checkpoint):
    np.save(tmp_path / "vol.npy", np.random.default_rng(0).random((2, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    return {
        "args": [
            "segment",
            tmp_path / "vol.npy",
            "--model",
            tiny_checkpoint,
            "--out",
            out,
            "--device",
            "cpu",
            "--quiet",
        ],
        "out": out,
        "mark": str(tmp_path / "writing."),
        "tmp": tmp_path,
    }


def _marked(job):
    return list(job["tmp"].glob("writing.*"))


def test_sigterm_mid_write_exits_like_ctrl_c_and_leaves_no_temporary(job):
    proc = _spawn(job["args"], SLOW_WRITER, OCTSEG_TEST_MARK=job["mark"])
    _wait_for(lambda: _marked(job) or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()
    assert list(job["out"].glob(f".*{TEMP_SUFFIX}")), "the child should be mid-write"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "terminated; no partial output was kept" in one_error_line(err, "octseg segment:")
    assert sorted(p.name for p in job["out"].iterdir()) == []


def test_sigkill_leaves_an_unmistakable_temporary_that_the_next_run_removes(job):
    proc = _spawn(job["args"], SLOW_WRITER, OCTSEG_TEST_MARK=job["mark"])
    _wait_for(lambda: _marked(job) or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.communicate(timeout=60)
    left = sorted(p.name for p in job["out"].iterdir() if p.name != "octseg-manifest.jsonl")
    ours = (".vol.labels.", ".vol.qc.csv.")
    assert left and all(name.startswith(ours) and name.endswith(TEMP_SUFFIX) for name in left), left
    rc, out, err, _ = run_octseg(*job["args"])
    assert rc == 0, err
    assert sorted(p.name for p in job["out"].iterdir()) == [
        "octseg-manifest.jsonl",
        "vol.labels.json",
        "vol.labels.tif",
        "vol.qc.csv",
    ]


def test_two_runs_to_the_same_output_one_wins_the_other_gets_one_line(job):
    procs = [_spawn(job["args"], SLOW_WRITER, OCTSEG_TEST_MARK=job["mark"], OCTSEG_TEST_SLEEP="6") for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    loser = next(err for rc, err in results if rc == 1)
    line = one_error_line(loser, "octseg segment: error:")
    assert "already exists" in line or "created by another process meanwhile" in line
    assert sorted(p.name for p in job["out"].iterdir()) == [
        "octseg-manifest.jsonl",
        "vol.labels.json",
        "vol.labels.tif",
        "vol.qc.csv",
    ]
    assert tifffile.imread(job["out"] / "vol.labels.tif").shape == (2, 32, 32)


def test_no_clobber_rename_keeps_a_file_created_meanwhile(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.json"
    with pytest.raises(OctsegError, match="created by another process meanwhile"):
        with atomic_paths(a, b, overwrite=False) as (ta, tb):
            ta.write_text("mine")
            tb.write_text("mine")
            b.write_text("theirs")  # another process wins the race for the second file
    assert b.read_text() == "theirs" and not a.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)] == []


def test_every_atomic_write_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    atomic_write_text(tmp_path / "x.csv", "a,b\n")
    assert any(p.endswith(TEMP_SUFFIX) for p in synced), synced


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    live = tmp_path / f".x.csv.{os.getpid()}-abcd{TEMP_SUFFIX}"
    dead = tmp_path / f".x.csv.999999999-abcd{TEMP_SUFFIX}"
    other = tmp_path / ".x.csv.notes"
    for p in (live, dead, other):
        p.write_text("")
    assert remove_stale_temporaries(tmp_path / "x.csv") == [dead]
    assert live.exists() and other.exists() and not dead.exists()


# -- an output that is also an input ----------------------------------------------------------------------------


def _labels_file(tmp_path: Path) -> Path:
    labels = np.zeros((1, 32, 32), np.uint8)
    labels[0, 10:] = 1
    labels[0, 20:] = 8
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, labels)
    return path


def _refused(capsys, argv, protected: Path, cmd: str) -> None:
    before = protected.read_bytes()
    assert main([str(a) for a in argv]) == 1
    line = one_error_line(capsys.readouterr().err, f"octseg {cmd}: error:")
    assert "is also the input" in line, line
    assert protected.read_bytes() == before


def test_thickness_csv_that_is_its_input_is_refused(tmp_path, capsys):
    x = _labels_file(tmp_path)
    _refused(capsys, ["thickness", x, "--csv", x, "--force"], x, "thickness")
    link = tmp_path / "link.csv"
    link.symlink_to(x)
    _refused(capsys, ["thickness", x, "--csv", link, "--force"], x, "thickness")


def test_finetune_out_that_is_its_labels_is_refused(tmp_path, capsys, tiny_checkpoint):
    np.save(tmp_path / "img.npy", np.zeros((1, 32, 32), np.float32))
    corr = tmp_path / "corr.npy"
    np.save(corr, np.ones((1, 32, 32), np.uint8))
    argv = ["finetune", "--images", tmp_path / "img.npy", "--labels", corr, "--base", tiny_checkpoint]
    _refused(capsys, [*argv, "--out", corr, "--force"], corr, "finetune")


def test_evaluate_csv_that_is_its_prediction_is_refused(tmp_path, capsys):
    x = _labels_file(tmp_path)
    _refused(capsys, ["evaluate", "--pred", x, "--truth", x, "--csv", x, "--force"], x, "evaluate")


@pytest.mark.parametrize(("cmd", "suffix"), [("segment", ".labels.tif"), ("gradcam", ".gradcam.tif")])
def test_segment_and_gradcam_outputs_that_resolve_to_the_input_are_refused(
    tmp_path, capsys, tiny_checkpoint, cmd, suffix
):
    src = tmp_path / "vol.npy"
    np.save(src, np.zeros((1, 32, 32), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    (out / f"vol{suffix}").symlink_to(src)
    _refused(capsys, [cmd, src, "--out", out, "--model", tiny_checkpoint, "--force"], src, cmd)


# -- start-up, signals before the work, file names ---------------------------------------------------------------

SLOW_START = """
import time, napari_octseg.cli as _cli, importlib as _il
class _Slow:
    def import_module(self, name):
        print("ready", flush=True)
        time.sleep(30)
        return _il.import_module(name)
_cli.importlib = _Slow()
"""


def test_ctrl_c_during_start_up_is_one_line_exit_130():
    proc = _spawn(["info", "x.npy"], SLOW_START)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in one_error_line(err, "octseg")


def test_newline_and_escape_in_a_file_name_stay_on_one_line(tmp_path, capsys):
    bad = tmp_path / "a\nb\x1b[2J.npy"
    assert main(["info", str(bad)]) == 1
    line = one_error_line(capsys.readouterr().err, "octseg info: error:")
    assert "a\\nb\\x1b[2J.npy" in line


def test_non_utf8_file_name_with_a_strict_ascii_stdout(tmp_path):
    name = os.fsdecode(b"scan\xff.npy")
    np.save(tmp_path / "good.npy", np.zeros((1, 8, 8), np.float32))
    os.rename(tmp_path / "good.npy", os.path.join(tmp_path, name))
    rc, out, err, _ = run_octseg("info", os.path.join(tmp_path, name), env={"PYTHONIOENCODING": "ascii:strict"})
    assert rc == 0, err
    assert "scan\\udcff.npy" in out and "Traceback" not in err
    rc, _, err, _ = run_octseg(
        "info", os.path.join(tmp_path, "missing\udcfe.npy"), env={"PYTHONIOENCODING": "ascii:strict"}
    )
    assert rc == 1 and "missing\\udcfe.npy" in one_error_line(err, "octseg info: error:")
