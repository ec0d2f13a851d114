"""``octseg info``: one block per readable file, one-line errors and exit 1 for the rest."""

from __future__ import annotations

import numpy as np

from napari_octseg.cli import main


def test_info_readable_and_broken(tmp_path, capsys):
    np.save(tmp_path / "ok.npy", np.zeros((2, 8, 9), np.float32))
    (tmp_path / "bad.vol").write_bytes(b"nope" * 10)
    code = main(["info", str(tmp_path / "bad.vol"), str(tmp_path / "ok.npy")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "2 B-scans x 8 rows x 9 A-scans" in out and "unknown (the file does not say)" in out
    assert err.strip().count("\n") == 0 and err.startswith("octseg info: error: bad.vol:")
    assert "Traceback" not in err


def test_info_vol(vol_dir, capsys):
    assert main(["info", str(vol_dir / "valid.vol")]) == 0
    out = capsys.readouterr().out
    assert "scan pattern circle" in out and "laterality   OD" in out and "3.872" in out
    assert "ILM (76% present)" in out
