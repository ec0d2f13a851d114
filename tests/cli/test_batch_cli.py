"""Resumable, sharded batch runs of ``octseg segment`` / ``gradcam`` / ``thickness``, and the manifest."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_octseg.batch import MANIFEST_NAME, read_manifest
from napari_octseg.cli import main


@pytest.fixture
def cohort(tmp_path, rng):
    """Folder ``in`` with five small volumes ``s0.npy`` .. ``s4.npy`` (2, 24, 24) float32."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"s{i}.npy", rng.random((2, 24, 24)).astype(np.float32))
    return sorted(folder.glob("*.npy"))


def _segment(inputs, out, model, *extra):
    return main(["segment", *map(str, inputs), "--out", str(out), "--model", str(model), "--quiet", *extra])


def _times(out):
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.labels.*"))}


def _rows(out, **match):
    rows = read_manifest(out / MANIFEST_NAME)
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def test_rerun_skips_up_to_date_outputs_and_redoes_stale_and_partial_ones(tmp_path, cohort, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    assert _segment(cohort, out, tiny_checkpoint) == 0
    first = _times(out)
    assert len(first) == 10
    capsys.readouterr()

    assert _segment(cohort, out, tiny_checkpoint) == 0  # same command again: nothing redone
    assert _times(out) == first
    printed = capsys.readouterr().out
    assert printed.count("up to date, skipped") == 5 and "0 of 5 inputs segmented" in printed

    (out / "s1.labels.tif").unlink()  # partial: the sidecar without its labels
    (out / "s2.labels.json").unlink()  # ... and labels whose sidecar is gone are not ours: kept
    (out / ".s3.labels.tif.abc123.tmp").write_bytes(b"half")  # a killed write's temporary
    (out / "s3.labels.json").write_text(
        (out / "s3.labels.json").read_text().replace('"reflectivity": "auto"', '"reflectivity": "display"')
    )  # stale: made with other options
    assert _segment(cohort, out, tiny_checkpoint) == 1
    captured = capsys.readouterr()
    now = _times(out)
    assert now["s0.labels.tif"] == first["s0.labels.tif"] and now["s4.labels.json"] == first["s4.labels.json"]
    assert now["s1.labels.tif"] != first.get("s1.labels.tif") and now["s3.labels.tif"] != first["s3.labels.tif"]
    assert "s1.labels.tif is missing" in captured.out and "another options" in captured.out
    assert "s2.labels.tif: already exists" in captured.err and "--force" in captured.err
    assert not list(out.glob(".*.tmp"))
    last = {r["file"]: r for r in read_manifest(out / MANIFEST_NAME)[-5:]}
    assert [last[str(p)]["status"] for p in cohort] == ["skipped", "done", "failed", "done", "skipped"]

    assert _segment(cohort, out, tiny_checkpoint, "--force") == 0  # --force redoes everything
    assert all(t != now.get(name) for name, t in _times(out).items())


def test_another_model_makes_every_output_stale(tmp_path, cohort, tiny_checkpoint, capsys):
    import torch

    from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint

    out = tmp_path / "out"
    assert _segment(cohort[:2], out, tiny_checkpoint) == 0
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())
    capsys.readouterr()
    assert _segment(cohort[:2], out, other) == 0
    assert capsys.readouterr().out.count("redone: made with another model") == 2
    info = json.loads((out / "s0.labels.json").read_text())
    assert info["run"]["model"]["name"] == "other" and len(info["run"]["model"]["sha256"]) == 64
    rows = _rows(out, status="done")
    assert len(rows) == 4 and rows[0]["model"]["sha256"] != rows[-1]["model"]["sha256"]
    assert all(r["bscans"] == 2 and r["seconds"] >= 0 and r["quality"] is None for r in rows)


def test_gradcam_option_change_is_stale(tmp_path, cohort, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = ["gradcam", str(cohort[0]), "--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]
    assert main([*args, "--classes", "1,2"]) == 0
    assert main([*args, "--classes", "1,2"]) == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert main([*args, "--classes", "1,2,3"]) == 0
    assert "redone: made with another options" in capsys.readouterr().out
    assert tifffile.imread(out / "s0.gradcam.tif").shape[1] == 3  # ZCYX: B-scan, class, depth, A-scan


def test_two_shards_make_every_output_once_and_share_one_manifest(tmp_path, cohort, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    for k in range(2):
        assert _segment(cohort, out, tiny_checkpoint, "--shard", f"{k}/2") == 0
    done = _rows(out, status="done")
    assert sorted(r["file"] for r in done) == sorted(map(str, cohort)) and len(done) == 5
    assert {r["shard"] for r in done} == {"0/2", "1/2"}
    assert len(list(out.glob("*.labels.tif"))) == 5


def test_torchrun_rank_takes_its_shard(tmp_path, cohort, tiny_checkpoint, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _segment(cohort, out, tiny_checkpoint) == 0
    assert sorted(p.name for p in out.glob("*.labels.tif")) == ["s1.labels.tif", "s3.labels.tif"]
    assert {r["shard"] for r in _rows(out)} == {"1/2"}


def test_bad_shard_is_a_usage_error(tmp_path, cohort, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exc:
        _segment(cohort, tmp_path / "out", tiny_checkpoint, "--shard", "2/2")
    assert exc.value.code == 2 and "K must be in 0..N-1" in capsys.readouterr().err


def _labels(seed: int) -> np.ndarray:
    from napari_octseg.synthetic import make_volume

    return make_volume(n_bscans=5, height=64, width=64, seed=seed).labels


def test_thickness_cohort_tables_from_a_folder_and_a_manifest(tmp_path, capsys):
    seg = tmp_path / "seg"
    seg.mkdir()
    for i in range(3):
        tifffile.imwrite(seg / f"S{i}.labels.tif", _labels(i))
    coh = tmp_path / "coh"
    args = ["--csv", str(coh / "t.csv"), "--etdrs", str(coh / "s.csv"), "--scale", "1177,30,92", "--laterality", "OD"]
    assert main(["thickness", str(seg), *args, "--quiet"]) == 0
    table = (coh / "t.csv").read_text().splitlines()
    assert table[0].startswith("labels_file,subject,source_file,eye,") and table[0].endswith(
        ",bscan,ascan,layer,thickness_um"
    )
    parts = [(coh / f"S{i}.thickness.csv").read_text().splitlines() for i in range(3)]
    assert len(table) == 1 + sum(len(p) - 1 for p in parts)
    assert table[1:] == [f"{seg / f'S{i}.labels.tif'},{row}" for i in range(3) for row in parts[i][1:]]
    sectors = list(csv.DictReader((coh / "s.csv").read_text().splitlines()))
    assert {"labels_file", "subject", "layer", "sector", "mean_um"} <= set(sectors[0])
    assert {row["subject"] for row in sectors} == {"S0", "S1", "S2"}
    first = (coh / "S0.thickness.csv").stat().st_mtime_ns
    capsys.readouterr()

    # again, with one more volume: only that one is measured; the tables are rewritten
    tifffile.imwrite(seg / "S3.labels.tif", _labels(3))
    assert main(["thickness", str(seg), *args, "--quiet"]) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 3
    assert (coh / "S0.thickness.csv").stat().st_mtime_ns == first
    assert {r["subject"] for r in csv.DictReader((coh / "t.csv").read_text().splitlines())} == {"S0", "S1", "S2", "S3"}

    # a manifest as input: the label files of its segment rows
    with open(seg / MANIFEST_NAME, "w") as f:
        for i in (0, 2):
            row = {"command": "segment", "file": f"in/S{i}.npy", "status": "done", "outputs": [f"S{i}.labels.tif"]}
            f.write(json.dumps(row) + "\n")
    man = ["--csv", str(tmp_path / "m.csv"), "--scale", "1177,30,92", "--quiet"]
    assert main(["thickness", str(seg / MANIFEST_NAME), *man]) == 0
    assert {r["subject"] for r in csv.DictReader((tmp_path / "m.csv").read_text().splitlines())} == {"S0", "S2"}


def test_thickness_cohort_keeps_a_table_it_did_not_make(tmp_path, capsys):
    seg = tmp_path / "seg"
    seg.mkdir()
    for i in range(2):
        tifffile.imwrite(seg / f"S{i}.labels.tif", _labels(i))
    (tmp_path / "t.csv").write_text("the user's own table\n")
    assert main(["thickness", str(seg), "--csv", str(tmp_path / "t.csv"), "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "t.csv").read_text() == "the user's own table\n"
    assert main(["thickness", str(seg), "--csv", str(tmp_path / "t.csv"), "--fovea", "1,2"]) == 1
    assert "--image and --fovea" in capsys.readouterr().err


def test_thickness_cohort_takes_each_eye_from_its_labels_sidecar(tmp_path, capsys):
    seg = tmp_path / "seg"
    seg.mkdir()
    for i, eye in enumerate(("OD", "OS")):
        tifffile.imwrite(seg / f"S{i}.labels.tif", _labels(i))
        (seg / f"S{i}.labels.json").write_text(json.dumps({"laterality": eye, "scan_pattern": "volume"}))
    args = ["--csv", str(tmp_path / "t.csv"), "--etdrs", str(tmp_path / "s.csv"), "--scale", "1177,30,92"]
    assert main(["thickness", str(seg), *args, "--quiet"]) == 0, capsys.readouterr().err
    assert [json.loads((tmp_path / f"S{i}.thickness.json").read_text())["laterality"] for i in (0, 1)] == ["OD", "OS"]
    (seg / "S1.labels.json").unlink()  # an eye nobody recorded: that volume fails in one line, the other is kept
    assert main(["thickness", str(seg), *args, "--force", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "S1.labels.tif: ETDRS not applicable" in err and "--laterality" in err
    rows = list(csv.DictReader((tmp_path / "s.csv").read_text().splitlines()))
    assert {row["subject"] for row in rows} == {"S0"}
