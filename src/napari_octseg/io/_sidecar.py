"""What the labels and heatmap files share: the JSON sidecar schema and the ImageJ TIFF with µm tags.

A file pair is ``<name>.tif`` + ``<name>.json`` (e.g. ``scan.labels.tif`` + ``scan.labels.json``). The
TIFF is an ImageJ hyperstack whose resolution tags and description carry the pixel spacing in µm, so
Fiji/ImageJ open it at scale; its ImageJ ``Info`` property holds the same JSON as the sidecar, so a
TIFF that lost its sidecar still reads back completely.

Sidecar schema (``format_version`` 2), common to both kinds::

    format           "napari-octseg labels" | "napari-octseg heatmaps"
    format_version   2
    package_version  napari-octseg version that wrote it
    file             the TIFF's file name
    axes             logical axes, e.g. ["bscan", "depth", "ascan"]
    tiff_axes        ImageJ axes of the TIFF, e.g. "ZYX" or "ZCYX"
    shape, dtype     of the logical array
    scale_um         [z, y, x] µm (B-scan, depth, A-scan) or null when unknown
    source           {"file", "name", "laterality", "scan_pattern", "scan_date"} of the OCT scan
    model            {"name", "source", "sha256", "short_hash", "training"} or null
    class_names      name of each class (labels: of each value; heatmaps: of each channel)

Files written before (no ``format`` key: ``input``, ``labels_file``/``heatmaps_file``,
``napari_octseg_version``, ``model`` as a path string) are read through :func:`normalise`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..core.atomic import atomic_paths, check_writable
from .provenance import model_identity

if TYPE_CHECKING:
    from tifffile import TiffFile

FORMAT_VERSION = 2
LABELS_FORMAT = "napari-octseg labels"
HEATMAPS_FORMAT = "napari-octseg heatmaps"
#: ImageJ description key marking our TIFFs (value: "labels" or "heatmaps").
MARKER_KEY = "octseg"
#: Called with the written temporary TIFF and its final name; returns extra sidecar entries (e.g. a hash).
AfterTiff = Callable[[Path, str], dict[str, Any]]


def sidecar_path(tif_path: str | os.PathLike) -> Path:
    """The JSON beside a TIFF: ``scan.labels.tif`` -> ``scan.labels.json``."""
    return Path(tif_path).with_suffix(".json")


def source_record(
    path: str | os.PathLike | None = None,
    *,
    laterality: str | None = None,
    scan_pattern: str | None = None,
    scan_date: str | None = None,
) -> dict[str, Any]:
    """The ``source`` entry: which OCT scan the file belongs to (path made absolute when it exists)."""
    text = None
    if path is not None and str(path):
        p = Path(path)
        text = str(p.resolve()) if p.exists() else str(p)
    return {
        "file": text,
        "name": subject_from_path(text) if text else None,
        "laterality": laterality,
        "scan_pattern": scan_pattern,
        "scan_date": scan_date,
    }


def scan_date(volume: object) -> str | None:
    """The acquisition date a reader put into ``volume.meta`` (ISO text), or ``None`` when unknown."""
    meta = getattr(volume, "meta", None) or {}
    for key in ("scan_date", "visit_date", "acquisition_date", "exam_time"):
        value = meta.get(key)
        if value:
            return str(value)[:10] if key == "exam_time" else str(value)
    return None


#: An OCT stack in a generic container, named so that napari hands it to this plugin (``S01.oct.tif``).
OCT_CONTAINER_SUFFIXES: tuple[str, ...] = (".oct.tif", ".oct.tiff", ".oct.npy")


def subject_from_path(path: str | os.PathLike) -> str:
    """Subject/volume id from a file name: the stem without our suffixes (``S01.labels.tif`` -> ``S01``).

    ``S01.oct.tif`` (an OCT stack named for the napari reader) gives ``S01`` too.
    """
    name = Path(path).name
    ours = (".labels.tif", ".labels.tiff", ".labels.npy", ".gradcam.tif", ".heatmaps.tif", *OCT_CONTAINER_SUFFIXES)
    for suffix in ours:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix else name


def model_record(model: object) -> dict[str, Any] | None:
    """The ``model`` entry from a loaded model (``.source``, ``.training``), a path or a ready dict."""
    if model is None:
        return None
    if isinstance(model, Mapping):
        out = dict(model)
        if "source" in out and "short_hash" not in out:
            out = {**(model_identity(out["source"]) or {}), **out}
        return out
    source = getattr(model, "source", model)
    out = model_identity(str(source)) or {}
    training = getattr(model, "training", None)
    if isinstance(training, Mapping):
        out["training"] = training_summary(training)
    return out


def training_summary(training: Mapping[str, Any], limit: int = 2000) -> dict[str, Any]:
    """A checkpoint's training record without bulky entries (e.g. per-epoch history)."""
    summary: dict[str, Any] = {}
    for key, value in training.items():
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            continue
        if len(text) <= limit:
            summary[str(key)] = value
    return summary


def base_record(
    kind: str,
    *,
    file: str,
    axes: list[str],
    tiff_axes: str,
    shape: tuple[int, ...],
    dtype: str,
    scale_um: tuple[float, float, float] | None,
    source: Mapping[str, Any] | None,
    model: object,
    class_names: list[str],
) -> dict[str, Any]:
    """The entries every sidecar has (see the module docstring)."""
    return {
        "format": kind,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "file": file,
        "axes": axes,
        "tiff_axes": tiff_axes,
        "shape": [int(s) for s in shape],
        "dtype": dtype,
        "scale_um": [float(s) for s in scale_um] if scale_um is not None else None,
        "source": dict(source) if source is not None else source_record(),
        "model": model_record(model),
        "class_names": list(class_names),
    }


def write_tiff_pair(
    tif_path: str | os.PathLike,
    data: np.ndarray,
    sidecar: Mapping[str, Any],
    *,
    tiff_axes: str,
    scale_um: tuple[float, float, float] | None,
    marker: str,
    force: bool = False,
    after_tiff: AfterTiff | None = None,
) -> tuple[Path, Path]:
    """Write ``data`` as an ImageJ TIFF at µm scale and ``sidecar`` as JSON beside it; both or neither.

    Both temporaries are complete before either is renamed into place, so a failure (full disk,
    Ctrl-C) leaves files that ``force`` was about to replace intact.

    Parameters
    ----------
    data
        Array in ``tiff_axes`` order (ImageJ order ``TZCYXS``; e.g. ``"ZYX"`` or ``"ZCYX"``).
    scale_um
        (z, y, x) µm: X/Y resolution tags (pixels per µm), ImageJ ``spacing`` and ``unit=um``.
    after_tiff
        Called with the written temporary TIFF and the TIFF's final name; the entries it returns are
        added to the JSON sidecar (e.g. the TIFF's hash for resumable runs).

    Raises
    ------
    OctsegError
        A target exists and ``force`` is false.
    """
    import tifffile

    tif_path = Path(tif_path)
    json_path = sidecar_path(tif_path)
    check_writable(tif_path, force)
    check_writable(json_path, force)
    text = json.dumps(sidecar, indent=2) + "\n"
    metadata: dict[str, Any] = {"axes": tiff_axes, MARKER_KEY: marker, "Info": json.dumps(sidecar)}
    kwargs: dict[str, Any] = {}
    if scale_um is not None:
        z, y, x = (float(s) for s in scale_um)
        if x > 0 and y > 0:
            kwargs["resolution"] = (1.0 / x, 1.0 / y)
            metadata["unit"] = "um"
        if z > 0:
            metadata["spacing"] = z
    with atomic_paths(tif_path, json_path, overwrite=force) as (tmp_tif, tmp_json):
        tifffile.imwrite(tmp_tif, data, imagej=True, photometric="minisblack", metadata=metadata, **kwargs)
        if after_tiff is not None:
            text = json.dumps({**sidecar, **after_tiff(Path(tmp_tif), tif_path.name)}, indent=2) + "\n"
        tmp_json.write_text(text, encoding="utf-8")
    return tif_path, json_path


def tiff_marker(tif: TiffFile) -> str | None:
    """Our marker (``"labels"``/``"heatmaps"``) in an open ``tifffile.TiffFile``'s ImageJ description."""
    meta = tif.imagej_metadata or {}
    value = meta.get(MARKER_KEY)
    return str(value) if value is not None else None


def embedded_sidecar(tif: Any) -> dict[str, Any] | None:
    """The sidecar JSON stored in an open TIFF's ImageJ ``Info`` property, or ``None``."""
    info = (tif.imagej_metadata or {}).get("Info")
    if not isinstance(info, str):
        return None
    try:
        value = json.loads(info)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def load_sidecar(tif_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar beside ``tif_path`` (normalised), ``None`` when absent or not one of ours.

    Raises
    ------
    ValueError
        The file exists but is not valid JSON.
    """
    path = sidecar_path(tif_path)
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return normalise(value)


def kind_of(info: Mapping[str, Any]) -> str | None:
    """``"labels"``, ``"heatmaps"`` or ``None`` for a (raw or normalised) sidecar dict."""
    fmt = info.get("format")
    if fmt == LABELS_FORMAT or (fmt is None and "labels_file" in info):
        return "labels"
    if fmt == HEATMAPS_FORMAT or (fmt is None and "heatmaps_file" in info):
        return "heatmaps"
    if fmt is None and "class_names" in info and "pixel_counts" in info:
        return "labels"
    return None


def normalise(info: Mapping[str, Any]) -> dict[str, Any]:
    """A sidecar in the current schema, from any version written before (unknown keys kept)."""
    out = dict(info)
    kind = kind_of(info)
    if info.get("format") is not None or kind is None:
        return out
    # format_version 1: octseg segment / octseg gradcam before the one schema
    out["format"] = LABELS_FORMAT if kind == "labels" else HEATMAPS_FORMAT
    out["format_version"] = 1
    out["package_version"] = info.get("package_version", info.get("napari_octseg_version"))
    out["file"] = info.get("labels_file", info.get("heatmaps_file"))
    if kind == "labels":
        out["tiff_axes"] = "ZYX"
        out["axes"] = ["bscan", "depth", "ascan"]
    else:
        out["tiff_axes"] = str(info.get("axes", "CZYX"))
        out["axes"] = ["class", "bscan", "depth", "ascan"]
    out["source"] = source_record(
        info.get("input"), laterality=info.get("laterality"), scan_pattern=info.get("scan_pattern")
    )
    model = info.get("model")
    if isinstance(model, str):
        out["model"] = model_record({"source": model, "name": Path(model).stem})
    elif isinstance(model, Mapping) and "source" in model:
        out["model"] = {"name": Path(str(model["source"])).stem, "sha256": None, "short_hash": None, **model}
    out.setdefault("edits", None)
    return out


def scale_from(info: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    """``scale_um`` of a sidecar as three floats (z may be 0), ``None`` when absent or not three numbers.

    Raises
    ------
    LabelError
        Three numbers that are not a usable spacing (0 or negative axial/lateral, NaN, absurdly large).
    """
    if not info:
        return None
    scale = info.get("scale_um")
    if not (isinstance(scale, (list, tuple)) and len(scale) == 3):
        return None
    try:
        values = tuple(float(s) for s in scale)
    except (TypeError, ValueError):
        return None
    if not all(np.isfinite(values)) or values[1] <= 0 or values[2] <= 0 or min(values) < 0 or max(values) > 1e5:
        # present but unusable: a corrupted sidecar is said, never read as "scale unknown"
        from ..core.errors import LabelError

        raise LabelError(
            f"pixel spacing {values} µm is not usable: axial and lateral must be above 0, each at most 100000 µm"
        )
    return values[0], values[1], values[2]
