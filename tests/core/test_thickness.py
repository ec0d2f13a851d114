"""Thickness maps, ETDRS / TSNIT sectors and CSV export on hand-built label volumes with known answers."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from napari_octseg.core.errors import InputError, LabelError, OctsegError
from napari_octseg.core.etdrs import (
    ETDRS_SECTORS,
    TSNIT_SECTORS,
    etdrs_sector_map,
    tsnit_sector_map,
)
from napari_octseg.core.fovea import find_fovea
from napari_octseg.core.progress import run_generator
from napari_octseg.core.tables import IDENTITY_COLUMNS, ScanIdentity
from napari_octseg.core.thickness import (
    THICKNESS_LAYERS,
    analyse,
    ascan_csv_text,
    export_csv,
    sector_csv_text,
    thickness_maps,
)

AXIAL = 3.87
#: Layer thicknesses in pixels (NFL .. RPE) of the reference A-scan; ILM at row 6.
THICK_PX = (3, 5, 7, 2, 9, 4, 3)
ILM = 6
DEPTH = 48


def column_labels(thick=THICK_PX, ilm=ILM, depth=DEPTH) -> np.ndarray:
    col = np.zeros(depth, np.uint8)
    edge = ilm
    for k, t in enumerate(thick):
        col[edge:] = k + 1
        edge += t
    col[edge:] = 8
    return col


def flat_volume(n: int, width: int, **kw) -> np.ndarray:
    return np.broadcast_to(column_labels(**kw)[None, :, None], (n, DEPTH, width)).copy()


def report_of(labels, scale=None, laterality="OD", pattern="volume", fovea=None, **kw):
    return run_generator(analyse(labels, scale, laterality, pattern, fovea=fovea, **kw))


# --- per-A-scan thickness ------------------------------------------------------------------------


def test_exact_micrometres_per_layer():
    scale = (100.0, AXIAL, 50.0)
    th = thickness_maps(flat_volume(2, 5), scale)
    assert th.unit == "um" and th.shape == (2, 5)
    assert list(th.maps) == list(THICKNESS_LAYERS)
    for name, t in zip(THICKNESS_LAYERS[:7], THICK_PX):
        np.testing.assert_array_equal(th.maps[name], np.float32(t) * np.float32(AXIAL))
    np.testing.assert_allclose(th.maps["total retina"], sum(THICK_PX) * AXIAL, rtol=1e-6)
    np.testing.assert_array_equal(th.maps["fluid"], 0)


def test_unscaled_is_in_pixels_and_says_so():
    th = thickness_maps(flat_volume(1, 3))
    assert th.unit == "px"
    np.testing.assert_array_equal(th.maps["INL"], 7)
    assert np.isnan(th.fluid_volume_mm3())
    text = ascan_csv_text(th, "v")
    assert text.splitlines()[0] == ",".join(IDENTITY_COLUMNS) + ",bscan,ascan,layer,thickness_px"


def test_fluid_counts_in_total_and_as_its_own_layer():
    lab = flat_volume(2, 4)
    inl_top = ILM + 3 + 5
    lab[0, inl_top + 1 : inl_top + 5, 1] = 9  # 4 fluid pixels inside the INL
    scale = (100.0, AXIAL, 50.0)
    th = thickness_maps(lab, scale)
    np.testing.assert_allclose(th.maps["fluid"][0], [0, 4 * AXIAL, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(th.maps["total retina"], sum(THICK_PX) * AXIAL, rtol=1e-6)
    layers_sum = sum(th.maps[name] for name in THICKNESS_LAYERS[:7])
    np.testing.assert_allclose(layers_sum, th.maps["total retina"], rtol=1e-6)
    assert th.fluid_volume_mm3() == pytest.approx(4 * 100.0 * AXIAL * 50.0 * 1e-9)


def test_bad_scale_and_labels():
    with pytest.raises(InputError, match="scale"):
        thickness_maps(flat_volume(1, 2), (1.0, 0.0, 1.0))
    with pytest.raises(LabelError):
        thickness_maps(np.full((3, 3), 11, np.uint8))


# --- ETDRS -----------------------------------------------------------------------------------------

#: 8 x 8 mm raster: 41 B-scans 200 µm apart, 161 A-scans 50 µm apart.
GRID_SCALE = (200.0, AXIAL, 50.0)
CENTRE = (20.0, 80.0)


def test_every_covered_sector_exact_and_volume_from_area():
    rep = report_of(flat_volume(41, 161), GRID_SCALE, fovea=CENTRE)
    table = rep.sectors
    assert table.grid == "etdrs" and table.unit == "um"
    assert table.sectors == list(ETDRS_SECTORS) + ["total", "scan"]
    areas = {"C0": np.pi * 0.25, "S1": np.pi * 2 / 4, "S2": np.pi * 6.75 / 4, "total": np.pi * 9}
    for name, t in zip(THICKNESS_LAYERS[:7], THICK_PX):
        for sector in ETDRS_SECTORS + ("total", "scan"):
            row = table.get(name, sector)
            assert row.mean == pytest.approx(t * AXIAL, rel=1e-6), (name, sector)
            assert row.coverage == pytest.approx(1.0)
            assert row.n_ascans > 0
        for sector, area in areas.items():
            assert table.get(name, sector).volume_mm3 == pytest.approx(t * AXIAL * 1e-3 * area, rel=1e-6)
        scan = table.get(name, "scan")
        assert scan.n_ascans == 41 * 161
        assert scan.volume_mm3 == pytest.approx(t * AXIAL * 41 * 161 * 200 * 50 * 1e-9, rel=1e-6)


def test_uncovered_sectors_are_nan_not_zero():
    # OD, fovea 10 A-scans (0.5 mm) from the left (temporal) edge: the temporal half is not scanned.
    rep = report_of(flat_volume(41, 161), GRID_SCALE, fovea=(20.0, 10.0))
    t = rep.sectors
    for sector in ("C0", "N1", "N2"):
        assert t.get("INL", sector).mean == pytest.approx(7 * AXIAL, rel=1e-6)
    for sector in ("T1", "T2", "S2", "total"):
        row = t.get("INL", sector)
        assert np.isnan(row.mean) and np.isnan(row.volume_mm3)
        assert row.coverage < 0.95
    assert t.get("INL", "T1").n_ascans > 0  # partly scanned, still too little
    assert t.get("INL", "T2").n_ascans == 0


def test_sector_geometry_od_os_and_bscan_order():
    sectors = etdrs_sector_map((41, 161), GRID_SCALE, CENTRE, "OD")
    name = {i: s for i, s in enumerate(ETDRS_SECTORS)}
    assert name[sectors[20, 80]] == "C0"
    assert name[sectors[20, 80 + 20]] == "N1"  # +1 mm in x: nasal for OD
    assert name[sectors[20, 80 - 40]] == "T2"
    assert name[sectors[20 + 5, 80]] == "S1"  # B-scan index grows towards superior
    assert name[sectors[20 - 10, 80]] == "I2"
    assert sectors[0, 0] == -1  # beyond 3 mm
    os_map = etdrs_sector_map((41, 161), GRID_SCALE, CENTRE, "OS")
    assert name[os_map[20, 100]] == "T1"
    flipped = etdrs_sector_map((41, 161), GRID_SCALE, CENTRE, "OD", bscan_order="superior_to_inferior")
    assert name[flipped[25, 80]] == "I1"


def _sided_volume() -> np.ndarray:
    """ONL 9 px on the +x half, 4 px on the -x half, and 2 px more for B-scans above the middle."""
    lab = np.zeros((41, DEPTH, 161), np.uint8)
    for i in range(41):
        for j in range(161):
            onl = (9 if j > 80 else 4) + (2 if i > 20 else 0)
            lab[i, :, j] = column_labels(thick=(3, 5, 7, 2, onl, 4, 3))
    return lab


def test_laterality_swaps_nasal_and_temporal():
    lab = _sided_volume()
    od = report_of(lab, GRID_SCALE, "OD", fovea=CENTRE).sectors
    os_ = report_of(lab, GRID_SCALE, "OS", fovea=CENTRE).sectors
    assert od.get("ONL+IS", "N1").mean > od.get("ONL+IS", "T1").mean
    for ring in "12":
        assert od.get("ONL+IS", "N" + ring).mean == pytest.approx(os_.get("ONL+IS", "T" + ring).mean)
        assert od.get("ONL+IS", "T" + ring).mean == pytest.approx(os_.get("ONL+IS", "N" + ring).mean)
        assert od.get("ONL+IS", "S" + ring).mean == pytest.approx(os_.get("ONL+IS", "S" + ring).mean)
    assert od.get("ONL+IS", "S1").mean > od.get("ONL+IS", "I1").mean
    assert od.laterality == "OD" and "nasal = +x" in od.note and "nasal = -x" in os_.note


def test_fovea_found_at_the_thinnest_inner_retina():
    lab = np.zeros((41, DEPTH, 161), np.uint8)
    z = (np.arange(41) - 23)[:, None] * 200.0
    x = (np.arange(161) - 70)[None, :] * 50.0
    pit = np.exp(-((np.hypot(z, x) / 600.0) ** 2))
    for i in range(41):
        for j in range(161):
            nfl = int(round(3 - 3 * pit[i, j]))
            gcl = int(round(5 - 5 * pit[i, j]))
            lab[i, :, j] = column_labels(thick=(nfl, gcl, 7, 2, 9 + 8 - nfl - gcl, 4, 3))
    rep = report_of(lab, GRID_SCALE)
    assert rep.sectors.fovea == (23.0, 70.0)
    assert find_fovea(rep.thickness.inner_retina(), GRID_SCALE) == (23.0, 70.0)
    with pytest.raises(InputError, match="fovea"):
        find_fovea(np.full((41, 161), np.nan), GRID_SCALE)


# --- other scan patterns ---------------------------------------------------------------------------


def test_circle_scan_gets_tsnit_sectors():
    width = 360  # one A-scan per degree, from the temporal meridian
    sector = tsnit_sector_map(width)
    nfl_px = {"T": 2, "TS": 6, "NS": 5, "N": 3, "NI": 7, "TI": 8}
    lab = np.zeros((1, DEPTH, width), np.uint8)
    for j in range(width):
        lab[0, :, j] = column_labels(thick=(nfl_px[TSNIT_SECTORS[sector[j]]], 5, 7, 2, 9, 4, 3))
    counts = {s: int((sector == i).sum()) for i, s in enumerate(TSNIT_SECTORS)}
    assert counts == {"T": 90, "TS": 40, "NS": 40, "N": 110, "NI": 40, "TI": 40}
    table = report_of(lab, (0.0, AXIAL, 12.0), laterality=None, pattern="circle").sectors
    assert table.grid == "tsnit"
    for s, px in nfl_px.items():
        row = table.get("NFL", s)
        assert row.mean == pytest.approx(px * AXIAL, rel=1e-6) and np.isnan(row.volume_mm3)
        assert row.n_ascans == counts[s]
    g = sum(nfl_px[s] * counts[s] for s in nfl_px) / width
    assert table.get("NFL", "G").mean == pytest.approx(g * AXIAL, rel=1e-6)


def test_line_scan_and_unscaled_volume_have_no_grid():
    line = report_of(flat_volume(1, 50), (0.0, AXIAL, 11.0), pattern="line").sectors
    assert line.grid == "none" and "single B-scan" in line.note
    assert line.sectors == ["scan"]
    assert line.get("INL", "scan").mean == pytest.approx(7 * AXIAL, rel=1e-6)
    unscaled = report_of(flat_volume(5, 20)).sectors
    assert unscaled.grid == "none" and unscaled.unit == "px" and "spacing unknown" in unscaled.note
    no_eye = report_of(flat_volume(5, 20), GRID_SCALE, laterality=None).sectors
    assert no_eye.grid == "none" and "laterality" in no_eye.note


# --- CSV -------------------------------------------------------------------------------------------


def test_ascan_csv_content_long_format():
    lab = flat_volume(2, 3)
    lab[1, :, 2] = 0  # no retina in one A-scan -> empty values
    rep = report_of(lab, GRID_SCALE, fovea=(0.5, 1.0))
    rows = list(csv.reader(io.StringIO(ascan_csv_text(rep.thickness, "eye, left"))))
    k = len(IDENTITY_COLUMNS)
    assert rows[0] == [*IDENTITY_COLUMNS, "bscan", "ascan", "layer", "thickness_um"]
    assert len(rows) == 1 + 2 * 3 * len(THICKNESS_LAYERS)
    assert rows[1] == ["eye, left", "", "", "", "unknown", "", "", "", "", "0", "0", "NFL", f"{3 * AXIAL:.3f}"]
    by_key = {(r[k], r[k + 1], r[k + 2]): r[k + 3] for r in rows[1:]}
    assert by_key[("0", "1", "INL")] == f"{7 * AXIAL:.3f}"
    assert by_key[("0", "1", "total retina")] == f"{sum(THICK_PX) * AXIAL:.3f}"
    assert by_key[("1", "2", "INL")] == "" and by_key[("1", "2", "fluid")] == ""


def test_sector_csv_and_export_no_overwrite(tmp_path):
    rep = report_of(flat_volume(41, 161), GRID_SCALE, fovea=CENTRE)
    a, e = tmp_path / "a.csv", tmp_path / "e.csv"
    written = export_csv(rep, a, e, volume_name="vol")
    assert written == [a, e]
    rows = list(csv.reader(e.open()))
    k = len(IDENTITY_COLUMNS)
    assert rows[0] == [*IDENTITY_COLUMNS, "layer", "sector", "mean_um", "volume_mm3", "n_ascans", "coverage"]
    assert len(rows) == 1 + len(THICKNESS_LAYERS) * (len(ETDRS_SECTORS) + 2)
    c0 = next(r for r in rows if r[k : k + 2] == ["INL", "C0"])
    assert float(c0[k + 2]) == pytest.approx(7 * AXIAL, abs=1e-6)
    # the subject and the fovea (grid centre, µm from the first B-scan / A-scan) are on every row
    assert c0[0] == "vol" and float(c0[7]) == pytest.approx(CENTRE[0] * GRID_SCALE[0])
    assert float(c0[8]) == pytest.approx(CENTRE[1] * GRID_SCALE[2])
    who = ScanIdentity(subject="vol").located(rep.sectors.fovea, rep.thickness.scale_um)
    assert sector_csv_text(rep.sectors, who) == e.read_text()
    a.write_text("keep me")
    with pytest.raises(OctsegError, match="already exists"):
        export_csv(rep, a, tmp_path / "new.csv")
    assert a.read_text() == "keep me" and not (tmp_path / "new.csv").exists()
    export_csv(rep, a, None, force=True)
    assert a.read_text().startswith("subject,source_file")
    with pytest.raises(InputError, match="different"):
        export_csv(rep, tmp_path / "x.csv", tmp_path / "x.csv")


def test_export_is_all_or_nothing(tmp_path):
    rep = report_of(flat_volume(2, 3), GRID_SCALE, fovea=(0.5, 1.0))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(OSError):
        export_csv(rep, tmp_path / "a.csv", blocker / "e.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]


def test_export_csv_reads_back_the_maps(tmp_path):
    rep = report_of(flat_volume(3, 4), None, laterality=None)
    export_csv(rep, tmp_path / "px.csv", tmp_path / "px_sectors.csv")
    rows = list(csv.DictReader((tmp_path / "px.csv").open()))
    for r in rows:
        expect = rep.thickness.maps[r["layer"]][int(r["bscan"]), int(r["ascan"])]
        assert float(r["thickness_px"]) == pytest.approx(float(expect))
    head = (tmp_path / "px_sectors.csv").read_text().splitlines()[0]
    assert head.endswith(",layer,sector,mean_px,volume_mm3,n_ascans,coverage")


def test_analyse_rejects_bad_fovea():
    with pytest.raises(InputError, match="fovea"):
        report_of(flat_volume(3, 4), GRID_SCALE, fovea=(np.nan, 1.0))


def test_csv_quality_column_exact():
    from napari_octseg.core.errors import InputError
    from napari_octseg.core.thickness import ascan_csv_text, thickness_maps

    lab = np.zeros((2, 6, 1), np.uint8)
    lab[:, 1:5, 0] = [1, 2, 3, 4]  # layers 5-7 absent: NaN
    maps = thickness_maps(lab)
    lines = ascan_csv_text(maps, "v", np.array([0.25, 1.0])).splitlines()
    assert lines[0].startswith("subject,") and lines[0].endswith(",bscan,ascan,layer,thickness_px,quality")
    assert lines[1].endswith(",0.2500") and lines[-1].endswith(",1.0000")
    assert len(lines) == 1 + 2 * 9
    with pytest.raises(InputError):
        ascan_csv_text(maps, "v", np.array([0.5]))
