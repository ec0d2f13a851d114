"""core.lazy: the packages' lazy public names (imported on first use, cached, listed by dir())."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_octseg.core.lazy import lazy_exports


def test_names_load_once_and_unknown_names_fail():
    namespace: dict[str, object] = {"__name__": "napari_octseg.core"}
    getattr_, dir_ = lazy_exports(namespace, {"OctVolume": "volume"})
    from napari_octseg.core.volume import OctVolume

    assert getattr_("OctVolume") is OctVolume and namespace["OctVolume"] is OctVolume
    assert "OctVolume" in dir_()
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        getattr_("nope")


def test_packages_import_torch_only_when_a_torch_name_is_used():
    code = (
        "import sys, napari_octseg.models as m, napari_octseg.learning as l, napari_octseg.explain as e\n"
        "m.DEVICE_CHOICES; l.scores; e.DEFAULT_LAYER\n"
        "assert 'torch' not in sys.modules, 'torch imported early'\n"
        "assert {'SegNet', 'fit', 'gradcam'} <= set(dir(m)) | set(dir(l)) | set(dir(e))\n"
        "m.SegNet\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
