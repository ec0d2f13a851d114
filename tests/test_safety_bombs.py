"""Issue 16, family 1: small files that would hang or blow up memory end in one line, fast, bounded memory.

Every crafted file is small; the cases that would allocate gigabytes run in a subprocess whose address
space is capped (``RLIMIT_AS``), and assert both the refusal message (so a ``MemoryError`` hitting the cap
cannot pass for the guard) and a peak resident size well under 1 GB.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from _safety_helpers import (
    e2e_crawler,
    e2e_plausible,
    heyex_xml,
    jpeg_claiming,
    npz_bomb,
    one_error_line,
    png_claiming,
    run_octseg,
    zlib_tiff_bomb,
)

from napari_octseg.core.errors import InputError, LabelError, OctReadError
from napari_octseg.io import read
from napari_octseg.io.heyex_eyepy import check_e2e_structure

GB = 1 << 30
#: Address-space cap of the reader subprocesses (numpy + tifffile + Pillow, no torch, need ~0.3 GB).
READER_AS = 2 * GB
#: ... of the subprocesses that import torch (its libraries map ~0.7 GB of address space).
TORCH_AS = 4 * GB


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    return {
        "e2e": e2e_crawler(d / "crawl.e2e"),
        "tif": zlib_tiff_bomb(d / "bomb.tif"),
        "npz": npz_bomb(d / "bomb.npz", {"images": (1, 8, 8), "labels": (16, 4096, 4096)}),
        "jpg": jpeg_claiming(d / "big.jpg", 12000, 12000),
        "folder": d,
    }


def test_e2e_chunk_chain_crawling_forward_is_refused_at_once(bombs):
    path = bombs["e2e"]
    assert path.stat().st_size < 4 << 20
    t0 = time.perf_counter()
    with pytest.raises(OctReadError, match="next chunk starts inside them") as info:
        read(path)
    assert time.perf_counter() - t0 < 5
    assert "\n" not in str(info.value)


def test_e2e_well_formed_chain_passes_the_check(tmp_path):
    path = e2e_plausible(tmp_path / "ok.e2e", chunks=3, folders=4)
    assert check_e2e_structure(path, path.stat().st_size) == 3


def test_octseg_info_on_the_e2e_crawler_is_one_line(bombs):
    rc, _, err, rss = run_octseg("info", bombs["e2e"], address_space=READER_AS)
    assert rc == 1
    assert "corrupt chunk chain" in one_error_line(err, "octseg info: error:")
    assert rss < GB // 2


def test_heyex_xml_pointing_forty_times_at_a_huge_png_is_refused_before_decoding(tmp_path):
    png_claiming(tmp_path / "big.png", 13000, 13000)
    heyex_xml(tmp_path, ["big.png"] * 40)
    rc, _, err, rss = run_octseg("info", tmp_path / "export.xml", address_space=READER_AS)
    assert rc == 1
    assert "larger than any OCT B-scan" in one_error_line(err, "octseg info: error:")
    assert rss < GB // 2


@pytest.mark.parametrize("url", ["../outside.png", "ABS"])
def test_heyex_xml_image_outside_its_folder_is_refused(tmp_path, url):
    export = tmp_path / "export"
    export.mkdir()
    outside = png_claiming(tmp_path / "outside.png", 8, 8)
    heyex_xml(export, [str(outside) if url == "ABS" else url])
    with pytest.raises(OctReadError, match="outside the export's folder"):
        read(export / "export.xml")


def test_heyex_xml_missing_image_is_one_line(tmp_path):
    heyex_xml(tmp_path, ["nowhere.png"])
    with pytest.raises(OctReadError, match="nowhere.png named in the XML is missing"):
        read(tmp_path / "export.xml")


def test_zlib_tiff_bomb_is_refused_by_info_and_evaluate(bombs):
    assert bombs["tif"].stat().st_size < 2 << 20
    rc, _, err, rss = run_octseg("info", bombs["tif"], address_space=READER_AS)
    assert rc == 1 and "decompression bomb" in one_error_line(err, "octseg info: error:")
    assert rss < GB // 2
    rc, _, err, rss = run_octseg("evaluate", "--pred", bombs["tif"], "--truth", bombs["tif"], address_space=TORCH_AS)
    assert rc == 1 and "decompression bomb" in one_error_line(err, "octseg evaluate: error:")
    assert rss < GB


def test_npz_bomb_is_refused_by_the_reader_evaluate_and_replay(bombs, tmp_path):
    assert bombs["npz"].stat().st_size < 2 << 20
    with pytest.raises(OctReadError, match="decompression bomb"):
        read(bombs["npz"])
    rc, _, err, rss = run_octseg("evaluate", "--pred", bombs["npz"], "--truth", bombs["npz"], address_space=TORCH_AS)
    assert rc == 1 and "decompression bomb" in one_error_line(err, "octseg evaluate: error:")
    assert rss < GB
    from napari_octseg.learning.finetune_data import load_replay

    with pytest.raises(InputError, match="decompression bomb"):
        load_replay([bombs["npz"]])


def test_replay_that_is_not_a_zip_is_one_input_error(tmp_path):
    from napari_octseg.learning.finetune_data import load_replay

    bad = tmp_path / "replay.npz"
    bad.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(InputError, match="replay.npz: not a readable .npz archive"):
        load_replay([bad])


def test_jpeg_header_claiming_12000_squared_is_refused_by_segment(bombs, tmp_path):
    assert bombs["jpg"].stat().st_size < 1000
    with pytest.raises(OctReadError, match="larger than any OCT B-scan"):
        read(bombs["jpg"])
    rc, _, err, rss = run_octseg("segment", bombs["jpg"], "--out", tmp_path / "out", address_space=TORCH_AS)
    assert rc == 1 and "larger than any OCT B-scan" in one_error_line(err, "octseg segment: error:")
    assert rss < GB
    made = {p.name for p in (tmp_path / "out").glob("*")} if (tmp_path / "out").exists() else set()
    assert made <= {"octseg-manifest.jsonl"}  # the run manifest's failed row, no output


def test_jpeg_header_claiming_more_than_its_bytes_can_hold_is_refused(tmp_path):
    path = jpeg_claiming(tmp_path / "mid.jpg", 6000, 6000)
    with pytest.raises(OctReadError, match="truncated or its header is corrupt"):
        read(path)


def test_reader_memory_check_refuses_what_this_machine_cannot_hold(tmp_path, monkeypatch):
    from napari_octseg.core import resources

    np.save(tmp_path / "v.npy", np.zeros((4, 64, 64), np.uint8))
    monkeypatch.setattr(resources, "available_memory", lambda: 50_000)
    with pytest.raises(OctReadError, match=r"^v.npy: reading it needs about .* is available; crop or split"):
        read(tmp_path / "v.npy")


def test_duke_npz_negative_int8_labels_are_a_label_error(tmp_path):
    path = tmp_path / "duke.npz"
    labels = np.zeros((1, 32, 32), np.int8)
    labels[0, 0, 0] = -3
    np.savez(path, images=np.zeros((1, 32, 32), np.uint8), labels=labels)
    with pytest.raises(LabelError, match=r"duke.npz: labels must be integers 0..9; found -3..0"):
        read(path)


def test_confusion_matrix_of_big_volumes_stays_in_small_chunks():
    from napari_octseg.learning.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    pred = rng.integers(0, 10, size=(8, 1024, 1024), dtype=np.uint8)
    truth = rng.integers(0, 10, size=(8, 1024, 1024), dtype=np.uint8)
    tracemalloc.start()
    try:
        cm = confusion_matrix(pred, truth, 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cm.sum() == pred.size
    expected = np.bincount(truth[:1].ravel().astype(np.int64) * 10 + pred[:1].ravel(), minlength=100)
    assert (confusion_matrix(pred[:1], truth[:1], 10).ravel() == expected).all()
    # int64 copies of both would be 16 bytes per pixel (134 MB here); chunks bound it at ~40 MB whatever the size
    assert peak < 48 << 20, f"peak {peak} bytes for {pred.size} pixels"
