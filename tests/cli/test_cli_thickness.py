"""``octseg thickness``: CSV outputs, scale sources, no overwrite, one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_octseg.cli import main

AXIAL = 3.87
THICK_PX = (3, 5, 7, 2, 9, 4, 3)


def _labels(n: int = 21, width: int = 81, depth: int = 40) -> np.ndarray:
    col = np.zeros(depth, np.uint8)
    edge = 5
    for k, t in enumerate(THICK_PX):
        col[edge:] = k + 1
        edge += t
    col[edge:] = 8
    return np.broadcast_to(col[None, :, None], (n, depth, width)).copy()


@pytest.fixture
def label_tif(tmp_path):
    path = tmp_path / "scan.labels.tif"
    tifffile.imwrite(path, _labels())
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("octseg thickness: error:")
    return lines[0]


def test_writes_both_csv_files(label_tif, tmp_path, capsys):
    out, etdrs = tmp_path / "t.csv", tmp_path / "t_etdrs.csv"
    rc = main(
        [
            "thickness",
            str(label_tif),
            "--scale",
            f"300,{AXIAL},75",
            "--laterality",
            "OD",
            "--fovea",
            "10,40",
            "--csv",
            str(out),
            "--etdrs",
            str(etdrs),
            "--quiet",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 21 * 81 * 9
    assert rows[0] == {
        "subject": "scan",
        "source_file": str(label_tif),
        "eye": "OD",
        "scan_date": "",
        "scan_pattern": "volume",
        "model": "",
        "model_hash": "",
        "fovea_bscan_um": "3000.0",
        "fovea_ascan_um": "3000.0",
        "bscan": "0",
        "ascan": "0",
        "layer": "NFL",
        "thickness_um": f"{3 * AXIAL:.3f}",
    }
    sectors = {(r["layer"], r["sector"]): r for r in csv.DictReader(etdrs.open())}
    assert float(sectors[("INL", "C0")]["mean_um"]) == pytest.approx(7 * AXIAL, abs=1e-6)
    assert float(sectors[("total retina", "N1")]["mean_um"]) == pytest.approx(sum(THICK_PX) * AXIAL, abs=1e-5)
    # 6 x 6 mm scan centred on the fovea: the 6 mm disc's outer ring is just inside it
    assert sectors[("INL", "T2")]["mean_um"] != ""


def test_prints_short_table(label_tif, tmp_path, capsys):
    rc = main(
        [
            "thickness",
            str(label_tif),
            "--scale",
            f"300,{AXIAL},75",
            "--laterality",
            "OS",
            "--csv",
            str(tmp_path / "a.csv"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "ETDRS grid" in out and "nasal = -x (OS)" in out
    assert any(line.startswith("C0") for line in out.splitlines())


def test_unscaled_writes_pixels(label_tif, tmp_path):
    out = tmp_path / "px.csv"
    assert main(["thickness", str(label_tif), "--csv", str(out), "--quiet"]) == 0
    header, first = out.read_text().splitlines()[:2]
    assert header.endswith(",fovea_ascan_um,bscan,ascan,layer,thickness_px")
    assert first.endswith(",NFL,3.000")


def test_scale_from_segment_sidecar(label_tif, tmp_path):
    label_tif.with_suffix(".json").write_text(json.dumps({"scale_um": [300, AXIAL, 75]}))
    out = tmp_path / "s.csv"
    assert main(["thickness", str(label_tif), "--csv", str(out), "--quiet"]) == 0
    assert out.read_text().splitlines()[0].endswith("thickness_um")


def test_scale_and_shape_from_image(label_tif, tmp_path, capsys):
    image = tmp_path / "scan.npy"
    np.save(image, np.zeros((21, 40, 81), np.float32))
    assert main(["thickness", str(label_tif), "--image", str(image), "--csv", str(tmp_path / "a.csv"), "--quiet"]) == 0
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((21, 40, 80), np.float32))
    out = tmp_path / "b.csv"
    assert main(["thickness", str(label_tif), "--image", str(wrong), "--csv", str(out)]) == 1
    assert "shape" in _one_line_error(capsys)
    assert not out.exists()


def test_wrong_classes_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    lab = _labels()
    lab[0, 0, 0] = 12
    np.save(bad, lab)
    out = tmp_path / "o.csv"
    assert main(["thickness", str(bad), "--csv", str(out)]) == 1
    assert "0..9" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--scale", "1,2"], "--scale"),
        (["--fovea", "a,b"], "--fovea"),
        (["--etdrs", "E"], "--scale or --image"),
        (["--etdrs", "E", "--scale", "300,3.87,75"], "--laterality"),
    ],
)
def test_bad_options_write_nothing(label_tif, tmp_path, capsys, extra, words):
    extra = [str(tmp_path / "e.csv") if e == "E" else e for e in extra]
    out = tmp_path / "o.csv"
    assert main(["thickness", str(label_tif), "--csv", str(out), *extra]) == 1
    assert words in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.labels.tif"]


def test_never_overwrites_without_force(label_tif, tmp_path, capsys):
    out, etdrs = tmp_path / "o.csv", tmp_path / "e.csv"
    etdrs.write_text("precious")
    args = [
        "thickness",
        str(label_tif),
        "--scale",
        "300,3.87,75",
        "--laterality",
        "OD",
        "--csv",
        str(out),
        "--etdrs",
        str(etdrs),
        "--quiet",
    ]
    assert main(args) == 1
    assert "already exists" in _one_line_error(capsys)
    assert etdrs.read_text() == "precious" and not out.exists()
    assert main(args + ["--force"]) == 0
    assert etdrs.read_text().startswith("subject,") and ",layer,sector,mean_um," in etdrs.read_text()


def test_file_without_labels(tmp_path, capsys):
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 30), np.uint8)).save(image)
    assert main(["thickness", str(image), "--csv", str(tmp_path / "o.csv")]) == 1
    assert "labels" in _one_line_error(capsys)


def test_duke_npz(duke_dir, tmp_path):
    path = duke_dir / "Subject_07.npz"
    out = tmp_path / "duke.csv"
    assert main(["thickness", str(path), "--csv", str(out), "--quiet"]) == 0
    lab = np.load(path, allow_pickle=False)["labels"]
    rows = out.read_text().splitlines()
    assert rows[0].endswith(",bscan,ascan,layer,thickness_um")
    assert len(rows) == 1 + lab.shape[0] * lab.shape[2] * 9
    from napari_octseg.io import read

    axial = read(path).scale_um[1]
    nfl = {(int(r[9]), int(r[10])): float(r[12]) for r in csv.reader(rows[1:]) if r[11] == "NFL" and r[12]}
    fluid_free = ~(lab == 9).any(axis=1)
    checked = 0
    for (b, a), value in nfl.items():
        if fluid_free[b, a]:
            assert value == pytest.approx(int((lab[b, :, a] == 1).sum()) * axial, abs=1e-3)
            checked += 1
    assert checked > lab.shape[0] * lab.shape[2] // 2


def test_quality_column_from_segment_sidecar(label_tif, tmp_path):
    quality = [round(0.05 * k, 2) for k in range(21)]
    sidecar = {"scale_um": [300, AXIAL, 75], "quality": {"score": quality}}
    label_tif.with_suffix(".json").write_text(json.dumps(sidecar))
    out, sectors = tmp_path / "q.csv", tmp_path / "q_sectors.csv"
    args = ["thickness", str(label_tif), "--csv", str(out), "--etdrs", str(sectors), "--laterality", "OD", "--quiet"]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[-5:] == ["bscan", "ascan", "layer", "thickness_um", "quality"]
    assert all(float(r["quality"]) == pytest.approx(quality[int(r["bscan"])]) for r in rows[:: 81 * 9])
    sector_rows = list(csv.DictReader(sectors.open()))
    assert all(float(r["quality"]) == pytest.approx(np.mean(quality), abs=1e-4) for r in sector_rows)


def test_quality_for_another_number_of_bscans_is_left_out(label_tif, tmp_path):
    label_tif.with_suffix(".json").write_text(json.dumps({"quality": {"score": [0.5, 0.5]}}))
    out = tmp_path / "q.csv"
    assert main(["thickness", str(label_tif), "--csv", str(out), "--quiet"]) == 0
    assert out.read_text().splitlines()[0].endswith(",bscan,ascan,layer,thickness_px")  # no quality column
