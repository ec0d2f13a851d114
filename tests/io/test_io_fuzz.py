"""Reader fuzz suite (issue 9): every crafted or foreign file ends in OctReadError / reader None.

The cases live in benchmarks/fuzz_readers.py (which prints the per-reader table); here a smaller
sample of .vol truncation offsets keeps the test well under a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fuzz_readers  # noqa: E402


def test_generic_and_array_cases(tmp_path):
    counts, failures, slowest = fuzz_readers.run_all(tmp_path, None)
    assert failures == []
    assert sum(counts.values()) >= 130
    assert slowest < 10.0
    assert not (tmp_path / "UNPICKLED_MARKER").exists()


def test_vol_mutations(tmp_path, vol_dir):
    vol_bytes = (vol_dir / "Willis_B_716_0.vol").read_bytes()
    counts, failures, slowest = fuzz_readers.run_all(tmp_path, vol_bytes, n_offsets=60)
    assert failures == []
    assert counts["vol"] >= 120
    assert slowest < 10.0


def test_object_npy_is_never_unpickled(tmp_path):
    import numpy as np

    from napari_octseg.core.errors import LabelError, OctReadError
    from napari_octseg.io import read, read_labels

    marker = tmp_path / "created_by_pickle"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([fuzz_readers._Marker(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(OctReadError, match="refusing to unpickle"):
        read(path)
    with pytest.raises(LabelError, match="refusing to unpickle"):
        read_labels(path)
    assert not marker.exists()
