"""The record of edited B-scans and of the model behind a label volume: one owner for both.

**Edit record.** When labels are made automatically, one short digest per B-scan is kept
(:func:`edit_record`); later, the B-scans whose digest changed are the ones a person edited
(:func:`edited_bscans`). The record is a small JSON-able dict, so it travels in a napari layer's
``metadata[EDIT_RECORD_KEY]`` and in the ``edits`` entry of a labels sidecar, and survives
save -> close -> reopen without a copy of the automatic volume. A full copy of the automatic labels
(an array, as other tools keep it) is accepted wherever a record is.

**Model identity.** :func:`model_identity` names a checkpoint by file stem and the first 12 hex
digits of its SHA-256, so a pooled CSV row or a labels file traces back to the exact weights.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.tables import ScanIdentity

#: napari layer-metadata key of the edit record (the Segment and Fine-tune docks use it).
EDIT_RECORD_KEY = "octseg_auto_labels"
#: napari layer-metadata key of how the labels were made (model source, class names, device...).
SEGMENTATION_KEY = "octseg_segmentation"
#: How the digests of an edit record are computed.
HASH_METHOD = "blake2b-128 per B-scan"
#: Digits of the SHA-256 kept as a model's short hash.
SHORT_HASH = 12


def bscan_hashes(labels: np.ndarray) -> list[str]:
    """One short digest per B-scan of a label volume, to detect later edits without keeping a copy.

    Parameters
    ----------
    labels
        Integer labels (n_bscans, depth, width) or (depth, width); values must fit in uint8.

    Returns
    -------
    list of str
        Hex BLAKE2b-128 digest of each B-scan's uint8 bytes (C order), plus its shape.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2:
        arr = arr[None]
    out = []
    for bscan in arr:
        h = hashlib.blake2b(digest_size=16)
        h.update(repr(bscan.shape).encode())
        h.update(np.ascontiguousarray(bscan, dtype=np.uint8).tobytes())
        out.append(h.hexdigest())
    return out


def edit_record(automatic: np.ndarray) -> dict[str, Any]:
    """The edit record of an automatic label volume (n_bscans, depth, width): method + digests."""
    return {"method": HASH_METHOD, "bscan_hashes": bscan_hashes(automatic)}


def _as_volume(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    return arr[None] if arr.ndim == 2 else arr


def edited_bscans(labels: np.ndarray, record: Sequence[str] | Mapping[str, Any] | np.ndarray) -> list[int]:
    """Indices of the B-scans of ``labels`` that differ from the automatic result ``record`` describes.

    Parameters
    ----------
    labels
        Current labels (n_bscans, depth, width) or (depth, width).
    record
        An edit record (dict with ``bscan_hashes``), its list of digests, or a full copy of the
        automatic labels (same number of voxels).

    Returns
    -------
    list of int
        0-based B-scan indices, ascending.

    Raises
    ------
    InputError
        The record does not describe a volume of this many B-scans (or voxels), or is not a record.
    """
    data = _as_volume(labels)
    if isinstance(record, np.ndarray):
        if record.size != data.size:
            raise InputError(f"automatic labels have {record.size} voxels, the labels {data.size}")
        auto = record.reshape(data.shape)
        return [int(i) for i in np.flatnonzero((data != auto).reshape(data.shape[0], -1).any(axis=1))]
    if isinstance(record, Mapping):
        if "bscan_hashes" not in record:
            raise InputError("the edit record holds no 'bscan_hashes'")
        record = record["bscan_hashes"]
    hashes = [str(h) for h in record]
    current = bscan_hashes(data)
    if len(current) != len(hashes):
        raise InputError(f"label volume has {len(current)} B-scans but the automatic record has {len(hashes)}")
    return [i for i, (a, b) in enumerate(zip(current, hashes)) if a != b]


def edited_or_none(labels: np.ndarray, record: object) -> list[int] | None:
    """:func:`edited_bscans`, or ``None`` when ``record`` is absent or does not fit ``labels``."""
    if record is None:
        return None
    if not isinstance(record, (Mapping, np.ndarray, list, tuple)):
        return None
    try:
        return edited_bscans(labels, record)
    except InputError:
        return None


def normalise_record(record: object, n_bscans: int) -> dict[str, Any] | None:
    """A JSON-able edit record (dict of digests) from any accepted form, or ``None`` if it does not fit.

    A full array of automatic labels becomes its digests; a dict keeps its digests and method.
    """
    if isinstance(record, np.ndarray):
        auto = np.asarray(record)
        if auto.ndim == 2:
            auto = auto[None]
        if auto.ndim != 3 or auto.shape[0] != n_bscans:
            return None
        return edit_record(auto)
    if isinstance(record, Mapping) and isinstance(record.get("bscan_hashes"), (list, tuple)):
        hashes = [str(h) for h in record["bscan_hashes"]]
        if len(hashes) != n_bscans:
            return None
        return {"method": str(record.get("method", HASH_METHOD)), "bscan_hashes": hashes}
    return None


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 (hex) of a file's bytes, or ``None`` when it cannot be read (cached per size and mtime)."""
    try:
        st = os.stat(path)
        return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        return None


def model_identity(source: str | os.PathLike | None) -> dict[str, Any] | None:
    """Name, source and hash of the checkpoint at ``source`` (``None`` for no model).

    Returns
    -------
    dict or None
        ``{"name": file stem, "source": str(source), "sha256": hex or None, "short_hash": 12 hex or None}``;
        the hash is ``None`` when the file is gone (e.g. an in-memory model).
    """
    if source is None:
        return None
    text = str(source)
    digest = file_sha256(text) if text and not text.startswith("<") else None
    name = Path(text).stem if not text.startswith("<") else text
    return {"name": name, "source": text, "sha256": digest, "short_hash": digest[:SHORT_HASH] if digest else None}


def scan_identity(
    source_file: str | os.PathLike | None,
    *,
    fallback_name: str = "",
    laterality: str | None = None,
    scan_pattern: str | None = None,
    scan_date: str | None = None,
    model: Mapping[str, Any] | str | None = None,
) -> ScanIdentity:
    """The identity columns of a measurement (:mod:`napari_octseg.core.tables`).

    ``subject`` is the scan file's stem (``fallback_name`` when no file is known, e.g. an array
    pasted into napari); ``model`` is a model record (``name``, ``short_hash``) or a checkpoint path.
    """
    from ._sidecar import subject_from_path

    record = model_identity(model) if isinstance(model, (str, os.PathLike)) else model
    record = record or {}
    return ScanIdentity(
        subject=subject_from_path(source_file) if source_file else fallback_name,
        source_file=str(source_file) if source_file else "",
        eye=laterality,
        scan_date=scan_date,
        scan_pattern=scan_pattern or "unknown",
        model=record.get("name"),
        model_hash=record.get("short_hash"),
    )


__all__ = [
    "EDIT_RECORD_KEY",
    "HASH_METHOD",
    "SEGMENTATION_KEY",
    "bscan_hashes",
    "edit_record",
    "edited_bscans",
    "edited_or_none",
    "file_sha256",
    "model_identity",
    "normalise_record",
    "scan_identity",
]
