"""Heidelberg .vol reader on the two genuine files (skipped when ../shared/data is absent)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from napari_octseg.core.errors import OctReadError
from napari_octseg.io import read
from napari_octseg.io.heyex_vol import read_vol


def test_line_scan(vol_dir):
    v = read(vol_dir / "Willis_B_716_0.vol")
    assert v.shape == (1, 496, 768)
    assert v.data.dtype == np.float32
    assert v.scan_pattern == "line" and v.laterality == "OD" and v.reflectivity == "linear"
    assert v.scale_um[1] == pytest.approx(3.8716698, rel=1e-6)
    assert v.scale_um[2] == pytest.approx(11.820577, rel=1e-6)
    assert v.meta["trailing_bytes"] == 132
    assert v.meta["bscan_header_size"] == 55296
    assert 0.0 <= v.data.min() and v.data.max() <= 1.0
    assert set(v.layers) == {"ILM", "BM", "RNFL"}
    # FLT_MAX gaps became NaN: ILM 9, BM 135, RNFL all 768 A-scans.
    assert [int(np.isnan(v.layers[k]).sum()) for k in ("ILM", "BM", "RNFL")] == [9, 135, 768]
    assert np.nanmax(v.layers["BM"]) < 496 and np.nanmin(v.layers["ILM"]) > 0


def test_circle_scan_eyepy_refuses(vol_dir):
    v = read(vol_dir / "valid.vol")
    assert v.shape == (1, 496, 768)
    assert v.scan_pattern == "circle"
    assert v.meta["bscan_header_size"] == 46080 and v.meta["trailing_bytes"] == 0
    assert v.scale_um[2] == pytest.approx(17.891, rel=1e-4)
    assert [int(np.isnan(v.layers[k]).sum()) for k in ("ILM", "BM", "RNFL")] == [187, 0, 187]
    assert not np.any(v.data >= 3e38)


def test_matches_eyepy_on_line_scan(vol_dir):
    from eyepy.io.he.vol_reader import HeVolReader

    path = vol_dir / "Willis_B_716_0.vol"
    theirs = HeVolReader(path)
    ours = read_vol(path)
    assert np.array_equal(theirs.parsed_file.bscans[0].data, ours.data[0])
    lines = theirs.layers  # (n_lines, n_bscans, width), NaN for FLT_MAX
    for i, name in enumerate(("ILM", "BM", "RNFL")):
        assert np.array_equal(lines[i], ours.layers[name], equal_nan=True)


def test_flt_max_pixels_become_zero(vol_dir, tmp_path):
    raw = bytearray((vol_dir / "Willis_B_716_0.vol").read_bytes())
    (sxs, sys_) = struct.unpack_from("<2I", raw, 48)
    (hdr,) = struct.unpack_from("<I", raw, 100)
    image = 2048 + sxs * sys_ + hdr
    struct.pack_into("<3f", raw, image, 3.4028235e38, 3.4028235e38, float("nan"))
    path = tmp_path / "gap.vol"
    path.write_bytes(bytes(raw))
    v = read(path)
    assert v.meta["invalid_pixels"] == 3
    assert np.all(v.data[0, 0, :3] == 0.0) and np.isfinite(v.data).all()


def test_truncated_image_is_rejected(vol_dir, tmp_path):
    raw = (vol_dir / "Willis_B_716_0.vol").read_bytes()
    path = tmp_path / "short.vol"
    path.write_bytes(raw[:-1000])
    with pytest.raises(OctReadError, match=r"^short\.vol: .*truncated"):
        read(path)


def test_absurd_dimensions_rejected_before_allocating(vol_dir, tmp_path):
    raw = bytearray((vol_dir / "Willis_B_716_0.vol").read_bytes())
    path = tmp_path / "huge.vol"
    struct.pack_into("<I", raw, 16, 60_000)  # 60 000 B-scans of 496 x 768: 91 GB claimed
    path.write_bytes(bytes(raw))
    with pytest.raises(OctReadError, match="claims 22855680000 voxels"):
        read(path)
    struct.pack_into("<I", raw, 16, 1000)  # plausible size, but the file cannot hold it
    path.write_bytes(bytes(raw))
    with pytest.raises(OctReadError, match="truncated or its header is corrupt"):
        read(path)
