"""pyproject's dependencies match what src/ imports (every third-party import declared, nothing stale)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "napari_octseg"
GUI = SRC / "_napari"

#: Import name -> distribution, for the names that differ (and so that the test needs nothing installed).
DISTRIBUTION = {
    "PIL": "pillow",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "oct_converter": "oct-converter",
    "yaml": "pyyaml",
}

#: Declared but imported nowhere in src/, with the reason.
NOT_IMPORTED = {
    # napari reads the plugin manifest (napari.yaml) through npe2; no module of ours imports it.
    "npe2": "napari loads the manifest through it",
    # On the design card (morphology, resampling); kept declared while no module imports it.
    "scikit-image": "design card dependency",
    # On the design card: resampling B-scans to the model's pixel spacing, imported lazily.
    "opencv-python": "design card dependency",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _imports(files: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party module names imported anywhere (also inside functions) -> the files importing them."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "napari_octseg":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _distribution(module: str) -> str:
    return DISTRIBUTION.get(module, module).lower().replace("_", "-")


def test_every_third_party_import_is_declared():
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    gui = core | {_name(r) for r in project["optional-dependencies"]["napari"]}
    headless = [p for p in SRC.rglob("*.py") if GUI not in p.parents]
    missing = {m: sorted(files) for m, files in _imports(headless).items() if _distribution(m) not in core}
    assert not missing, f"imported outside _napari/ but not in [project] dependencies: {missing}"
    missing_gui = {
        m: sorted(files) for m, files in _imports(list(GUI.rglob("*.py"))).items() if _distribution(m) not in gui
    }
    assert not missing_gui, f"imported in _napari/ but in neither dependencies nor the napari extra: {missing_gui}"


def test_no_stale_dependencies():
    project = _project()
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["napari"]}
    used = {_distribution(m) for m in _imports(list(SRC.rglob("*.py")))}
    stale = declared - used - set(NOT_IMPORTED)
    assert not stale, f"declared but imported nowhere in src/ (drop them or say why in NOT_IMPORTED): {stale}"


def test_torch_floor_supports_the_amp_api_used():
    # learning/engine.py uses torch.amp.GradScaler("cuda"), which needs torch 2.3.
    (torch_req,) = [r for r in _project()["dependencies"] if _name(r) == "torch"]
    floor = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", torch_req).group(1).split(".")[:2])
    assert floor >= (2, 3), torch_req
