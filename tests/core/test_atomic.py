"""Atomic writes: all or nothing, ordinary permissions, no overwrite without consent."""

from __future__ import annotations

import os
import stat

import pytest

from napari_octseg.core.atomic import atomic_path, atomic_write_text, check_writable
from napari_octseg.core.errors import OctsegError


def test_crash_mid_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_written_file_has_umask_permissions(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert target.read_text() == "x"


def test_check_writable_refuses_existing_without_force(tmp_path):
    target = tmp_path / "a.txt"
    assert check_writable(target) == target
    target.write_text("keep")
    with pytest.raises(OctsegError, match="already exists"):
        check_writable(target)
    assert check_writable(target, force=True) == target
    assert target.read_text() == "keep"
