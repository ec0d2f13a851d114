"""The napari manifest: the root copy matches the package's, and its reader patterns match what io reads."""

from __future__ import annotations

from pathlib import Path

import pytest

import napari_octseg
from napari_octseg.io import READERS

yaml = pytest.importorskip("yaml")

PKG_MANIFEST = Path(napari_octseg.__file__).parent / "napari.yaml"
ROOT_MANIFEST = Path(__file__).resolve().parents[2] / "napari.yaml"


def _patterns() -> list[str]:
    readers = yaml.safe_load(PKG_MANIFEST.read_text(encoding="utf-8"))["contributions"]["readers"]
    (reader,) = [r for r in readers if r["command"] == "napari-octseg.get_reader"]
    return list(reader["filename_patterns"])


@pytest.mark.skipif(not ROOT_MANIFEST.is_file(), reason="an installed wheel carries only the package manifest")
def test_root_manifest_is_a_copy_of_the_package_one():
    # npe2 loads src/napari_octseg/napari.yaml (the entry point names it; wheels need it inside the
    # package); the root napari.yaml is a copy for the repository's readers: `cp` it after each edit.
    assert ROOT_MANIFEST.read_bytes() == PKG_MANIFEST.read_bytes(), (
        "napari.yaml differs from src/napari_octseg/napari.yaml: cp src/napari_octseg/napari.yaml napari.yaml"
    )


def test_reader_patterns_match_what_io_reads():
    from napari_octseg._napari.reader_choice import GENERIC_EXTENSIONS, reader_patterns

    patterns = _patterns()
    assert all(p.startswith("*.") for p in patterns), patterns
    assert patterns == reader_patterns()  # the manifest is written from the one list in reader_choice
    # every pattern names a file io reads; generic containers only under our double suffix
    for pattern in patterns:
        ext = "." + pattern.rsplit(".", 1)[-1].lower()
        assert ext in READERS, pattern
        assert ext not in GENERIC_EXTENSIONS or pattern.lower().count(".") == 2, pattern
    assert len(patterns) == len(set(patterns))


def test_reader_patterns_claim_upper_and_lower_case_names():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(PKG_MANIFEST)
    (reader,) = manifest.contributions.readers
    for name in ("scan.E2E", "scan.e2e", "b.OCT", "b.oct", "x.labels.tif", "X.LABELS.TIF", "s.oct.npy", "v.vol"):
        assert any(Path(name).match(p) for p in reader.filename_patterns), name
