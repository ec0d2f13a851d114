"""``octseg --help``, ``info`` and ``thickness`` start fast: they import no torch and no scipy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "scipy", "napari", "qtpy", "magicgui")


def _loaded_after(calls: list[list[str]]) -> dict:
    """Run ``main(argv)`` for each argv in a fresh interpreter; return exit codes and the heavy modules loaded."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from napari_octseg.cli import main
        codes = []
        for argv in {calls!r}:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    codes.append(main(argv))
                except SystemExit as exc:
                    codes.append(exc.code)
        print(json.dumps({{"codes": codes, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"], ["thickness", "--help"], ["finetune", "--help"]])
def test_help_imports_no_torch_or_scipy(argv):
    result = _loaded_after([argv])
    assert result["codes"] == [0]
    assert result["loaded"] == [], f"octseg {' '.join(argv)} imported {result['loaded']}"


def test_info_and_thickness_import_no_torch_or_scipy(tmp_path):
    rows = np.arange(40)[None, :, None]
    labels = np.broadcast_to(np.searchsorted([5, 10, 14, 18, 22, 26, 30, 34], rows, side="right"), (5, 40, 30))
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint8))
    np.save(tmp_path / "volume.npy", np.random.default_rng(0).random((5, 40, 30), dtype=np.float32))
    result = _loaded_after(
        [
            ["info", str(tmp_path / "volume.npy")],
            ["thickness", str(tmp_path / "labels.tif"), "--csv", str(tmp_path / "t.csv"), "--quiet"],
        ]
    )
    assert result["codes"] == [0, 0]
    assert (tmp_path / "t.csv").is_file()
    assert result["loaded"] == [], f"octseg info/thickness imported {result['loaded']}"
