"""The house rules that keep the code livable, enforced rather than hoped for."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PKG = Path(__file__).resolve().parents[1] / "src" / "napari_octseg"
GUI_MODULES = ("qtpy", "napari", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_outside_napari_adapters_imports_gui_toolkits():
    offenders = []
    for path in PKG.rglob("*.py"):
        if "_napari" in path.relative_to(PKG).parts:
            continue
        bad = _imports(path) & set(GUI_MODULES)
        if bad:
            offenders.append(f"{path.relative_to(PKG)}: {sorted(bad)}")
    assert not offenders, offenders


def test_importing_the_package_loads_neither_torch_nor_qt():
    code = (
        "import sys, napari_octseg, napari_octseg.core;"
        "bad=[m for m in ('torch','napari','qtpy','PyQt6','magicgui') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_modules_stay_small():
    big = [f"{p.relative_to(PKG)}: {n}" for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450]
    assert not big, f"split these modules: {big}"


def _manifest() -> dict:
    return yaml.safe_load((PKG / "napari.yaml").read_text())


def test_every_manifest_python_name_imports():
    for command in _manifest()["contributions"]["commands"]:
        module, _, attr = command["python_name"].partition(":")
        obj = importlib.import_module(module)
        assert hasattr(obj, attr), command["python_name"]


def test_manifest_validates_with_npe2():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(PKG / "napari.yaml")
    assert manifest.name == "napari-octseg"
    assert {w.display_name for w in manifest.contributions.widgets} >= {
        "Segment layers",
        "Explain (Grad-CAM)",
        "Fine-tune on corrections",
        "Layer thickness",
    }


def test_installed_distribution_exposes_the_manifest():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "napari-octseg" in pm._manifests
