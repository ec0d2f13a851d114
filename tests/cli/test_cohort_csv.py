"""CSVs that pool across a cohort: identity columns on every row, and the boundary-surface CSV.

Three synthetic subjects go through ``octseg thickness``; their per-A-scan, sector and surface CSVs
concatenate (csv module only) into one table that groups by subject, eye and layer, and every group
holds exactly that subject's numbers.
"""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest

from napari_octseg.cli import main
from napari_octseg.core.classes import BOUNDARY_NAMES
from napari_octseg.core.tables import IDENTITY_COLUMNS, surfaces_csv_text
from napari_octseg.core.thickness import THICKNESS_LAYERS, thickness_maps
from napari_octseg.io.labels import write_labels_file
from napari_octseg.synthetic import make_volume

SUBJECTS = (("S01", "OD", 1), ("S02", "OS", 2), ("S03", "OD", 3))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Per subject: its labels file (as ``octseg segment`` writes it) and its three CSVs."""
    tmp_path = tmp_path_factory.mktemp("cohort")
    model = tmp_path / "cohort_model.pt"
    model.write_bytes(b"the weights")
    out = {}
    for subject, eye, seed in SUBJECTS:
        vol = make_volume(n_bscans=9, height=160, width=64, seed=seed, laterality=eye, noise=0.0)
        tif, _ = write_labels_file(
            tmp_path / f"{subject}.labels.tif",
            vol.labels,
            scale_um=vol.scale_um,
            source={
                "file": f"/cohort/{subject}.vol",
                "name": subject,
                "laterality": eye,
                "scan_pattern": "volume",
                "scan_date": f"2024-01-0{seed}",
            },
            model=str(model),
        )
        csvs = {kind: tmp_path / f"{subject}_{kind}.csv" for kind in ("ascans", "sectors", "surfaces")}
        args = ["thickness", str(tif), "--csv", str(csvs["ascans"]), "--etdrs", str(csvs["sectors"])]
        assert main([*args, "--surfaces", str(csvs["surfaces"]), "--quiet"]) == 0
        out[subject] = (vol, csvs)
    return out


def _concat(paths):
    header, rows = None, []
    for path in paths:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            head = next(reader)
            assert header is None or head == header  # same columns in every file: they stack
            header = head
            rows.extend(dict(zip(head, r)) for r in reader)
    return header, rows


def test_three_subjects_concatenate_and_group_by_subject_eye_layer(cohort):
    header, rows = _concat([csvs["ascans"] for _, csvs in cohort.values()])
    assert tuple(header[: len(IDENTITY_COLUMNS)]) == IDENTITY_COLUMNS
    groups = defaultdict(list)
    for r in rows:
        if r["thickness_um"]:
            groups[(r["subject"], r["eye"], r["layer"])].append(float(r["thickness_um"]))
    measured = {(s, e, layer) for s, e, _ in SUBJECTS for layer in THICKNESS_LAYERS if layer != "fluid"}
    assert measured <= set(groups) and {k[:2] for k in groups} == {(s, e) for s, e, _ in SUBJECTS}
    for subject, eye, _ in SUBJECTS:
        vol, _ = cohort[subject]
        maps = thickness_maps(vol.labels, vol.scale_um).maps["total retina"]
        assert np.mean(groups[(subject, eye, "total retina")]) == pytest.approx(float(np.nanmean(maps)), abs=1e-3)
    first = {s: next(r for r in rows if r["subject"] == s) for s, _, _ in SUBJECTS}
    assert first["S02"]["source_file"] == "/cohort/S02.vol" and first["S02"]["scan_date"] == "2024-01-02"
    assert {r["model"] for r in first.values()} == {"cohort_model"}
    assert len({r["model_hash"] for r in first.values()}) == 1 and len(first["S01"]["model_hash"]) == 12
    assert all(float(r["fovea_bscan_um"]) > 0 and float(r["fovea_ascan_um"]) > 0 for r in first.values())


def test_sector_csvs_concatenate_with_one_row_per_subject_layer_sector(cohort):
    _, rows = _concat([csvs["sectors"] for _, csvs in cohort.values()])
    keys = [(r["subject"], r["eye"], r["layer"], r["sector"]) for r in rows]
    assert len(keys) == len(set(keys))  # every row is told apart by its identity
    c0 = {(r["subject"], r["eye"]): float(r["mean_um"]) for r in rows if (r["layer"], r["sector"]) == ("INL", "C0")}
    assert set(c0) == {(s, e) for s, e, _ in SUBJECTS}


def test_surface_csv_holds_every_boundary_in_px_and_um(cohort):
    vol, csvs = cohort["S01"]
    _, rows = _concat([csvs["surfaces"]])
    n, _, width = vol.labels.shape
    assert len(rows) == n * width * len(BOUNDARY_NAMES)
    boundaries = thickness_maps(vol.labels, vol.scale_um).boundaries
    for r in rows[::97]:
        k = BOUNDARY_NAMES.index(r["boundary"])
        expect = boundaries[k, int(r["bscan"]), int(r["ascan"])]
        assert float(r["depth_px"]) == pytest.approx(float(expect), abs=0.005)
        assert float(r["depth_um"]) == pytest.approx(float(expect) * vol.scale_um[1], abs=0.01)
        assert r["subject"] == "S01" and r["eye"] == "OD"
    assert [r["boundary"] for r in rows[: len(BOUNDARY_NAMES)]] == list(BOUNDARY_NAMES)  # top to bottom


def test_surface_csv_without_scale_leaves_um_empty():
    b = np.full((len(BOUNDARY_NAMES), 1, 2), np.nan, np.float32)
    b[0, 0, 0] = 12.5
    text = surfaces_csv_text(b, None, "x")
    rows = list(csv.DictReader(text.splitlines()))
    assert rows[0]["depth_px"] == "12.50" and rows[0]["depth_um"] == "" and rows[1]["depth_px"] == ""
