"""Reader fuzz suite (issue 9): every case must end in OctReadError, quickly and without big memory.

Cases: the real ``.vol`` truncated at every header boundary and at many offsets, header fields set
to absurd values or byte-swapped (wrong endianness), random bytes and empty files with each
supported extension, directories named like files, ``.npy`` object arrays with a payload that would
create a file if unpickled, 4-D arrays, corrupt ``.npz``/TIFF/PNG headers. ``python
benchmarks/fuzz_readers.py`` prints cases and failures per reader; tests/io/test_io_fuzz.py runs it.
"""

from __future__ import annotations

import logging
import pickle
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

VOL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "heyex_vol" / "Willis_B_716_0.vol"

Case = tuple[str, str, Callable[[Path], Path]]  # (reader family, description, writer -> path)


class _Marker:
    """Unpickling this creates a file: proof that a reader unpickled something."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return make


def vol_cases(vol_bytes: bytes, n_offsets: int = 150, seed: int = 0) -> Iterator[Case]:
    """Truncations, absurd fields and byte swaps of a genuine ``.vol`` file."""
    from napari_octseg.io.heyex_vol import FILE_HEADER_SIZE

    size = len(vol_bytes)
    (sx, _, sz) = struct.unpack_from("<3I", vol_bytes, 12)
    (sxs, sys_) = struct.unpack_from("<2I", vol_bytes, 48)
    (hdr,) = struct.unpack_from("<I", vol_bytes, 100)
    slo_end = FILE_HEADER_SIZE + sxs * sys_
    boundaries = {
        0,
        1,
        11,
        12,
        16,
        20,
        24,
        48,
        100,
        104,
        FILE_HEADER_SIZE - 1,
        FILE_HEADER_SIZE,
        slo_end - 1,
        slo_end,
        slo_end + 256,
        slo_end + hdr - 1,
        slo_end + hdr,
        slo_end + hdr + sx * 4,
        size - 133,
        size - 132 - 1,
    }
    rng = np.random.default_rng(seed)
    offsets = sorted(boundaries | set(rng.integers(1, size - 132, n_offsets).tolist()))
    for cut in offsets:
        if 0 <= cut < size - 132:
            yield ("vol", f"truncated at {cut}", _write(f"cut{cut}.vol", vol_bytes[:cut]))
    fields = {"size_x": 12, "n_bscans": 16, "size_z": 20, "size_x_slo": 48, "size_y_slo": 52, "bscan_hdr": 100}
    for name, off in fields.items():
        for value in (0, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 20, 70_000):
            data = bytearray(vol_bytes)
            struct.pack_into("<I", data, off, value)
            yield ("vol", f"{name}={value}", _write(f"{name}{value}.vol", bytes(data)))
        data = bytearray(vol_bytes)
        data[off : off + 4] = data[off : off + 4][::-1]
        yield ("vol", f"{name} big-endian", _write(f"{name}_be.vol", bytes(data)))
    for name, off in {"scale_x": 24, "distance": 32, "scale_z": 40}.items():
        for value in (float("nan"), float("inf"), -1.0, 1e30):
            data = bytearray(vol_bytes)
            struct.pack_into("<d", data, off, value)
            yield ("vol", f"{name}={value}", _write(f"{name}{value}.vol", bytes(data)))
    bscan = slo_end
    for name, off, value in (
        ("num_seg", 48, 0xFFFF),
        ("num_seg", 48, 1 << 30),
        ("off_seg", 52, 0xFFFFFFF0),
        ("bscan magic", 0, 0x41414141),
    ):
        data = bytearray(vol_bytes)
        struct.pack_into("<I", data, bscan + off, value)
        yield ("vol", f"B-scan {name}={value}", _write(f"b{name}{value}.vol".replace(" ", ""), bytes(data)))
    yield (
        "vol",
        "whole file byte-swapped",
        _write("swapped.vol", np.frombuffer(vol_bytes[: size - size % 4], "<u4").byteswap().tobytes()),
    )


def generic_cases(seed: int = 0) -> Iterator[Case]:
    """Empty files, random bytes, folders named like files, for every supported extension."""
    from napari_octseg.io import SUPPORTED_EXTENSIONS

    rng = np.random.default_rng(seed)
    for ext in SUPPORTED_EXTENSIONS:
        family = ext.lstrip(".")
        yield (family, "empty file", _write(f"empty{ext}", b""))
        for n in (1, 7, 64, 2048, 70_000):
            yield (family, f"{n} random bytes", _write(f"rand{n}{ext}", rng.bytes(n)))
        yield (family, "zeros", _write(f"zeros{ext}", bytes(4096)))

        def make_dir(tmp: Path, ext=ext) -> Path:
            path = tmp / f"folder{ext}"
            path.mkdir()
            return path

        yield (family, "directory", make_dir)


def array_cases(marker: Path) -> Iterator[Case]:
    """Crafted ``.npy``/``.npz``/TIFF/PNG containers."""
    import io
    import zipfile

    def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=allow_pickle)
        return buf.getvalue()

    payload = np.array([_Marker(str(marker))], dtype=object)
    yield ("npy", "object array (pickle payload)", _write("pickle.npy", npy_bytes(payload, True)))
    raw_pickle = pickle.dumps(_Marker(str(marker)))
    yield ("npy", "raw pickle", _write("raw.npy", raw_pickle))
    yield ("npy", "4-D array", _write("four.npy", npy_bytes(np.zeros((2, 2, 3, 4), np.uint8))))
    yield ("npy", "complex array", _write("complex.npy", npy_bytes(np.zeros((2, 3), np.complex64))))
    yield ("npy", "scalar", _write("scalar.npy", npy_bytes(np.float32(3))))
    good = npy_bytes(np.zeros((4, 8, 8), np.float32))
    yield ("npy", "truncated data", _write("trunc.npy", good[:-10]))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (99_999, 99_999, 9)})
    absurd = header.getvalue() + bytes(1024)
    yield ("npy", "absurd shape", _write("absurd.npy", absurd))
    yield ("npy", "NaN values", _write("nan.npy", npy_bytes(np.full((2, 4, 4), np.nan, np.float32))))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images.npy", npy_bytes(payload, True))
    yield ("npz", "object member", _write("obj.npz", buf.getvalue()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", good[:-100])
    yield ("npz", "member shorter than its header says", _write("short.npz", buf.getvalue()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", absurd + bytes(1_000_000))
    yield ("npz", "absurd member shape (compressed)", _write("bomb.npz", buf.getvalue()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", good)
        zf.writestr("b.npy", good)
    yield ("npz", "two arrays, no images", _write("two.npz", buf.getvalue()))
    tif_header = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 2)
        + struct.pack("<HHII", 256, 4, 1, 1 << 30)
        + struct.pack("<HHII", 257, 4, 1, 1 << 30)
        + b"\x00" * 4
    )
    yield ("tif", "absurd TIFF dimensions", _write("absurd.tif", tif_header))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">II", 1 << 30, 1 << 30)
        + b"\x08\x00\x00\x00\x00"
    )
    yield ("png", "absurd PNG dimensions", _write("absurd.png", png + b"\x00" * 4))


def run_all(tmp: Path, vol_bytes: bytes | None, n_offsets: int = 150) -> tuple[Counter, list[str], float]:
    """Run every case; returns (cases per reader family, failures, slowest case in seconds)."""
    from napari_octseg._napari.reader import get_reader
    from napari_octseg.core.errors import OctReadError
    from napari_octseg.io import read

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # its warnings on crafted TIFFs are expected

    marker = tmp / "UNPICKLED_MARKER"
    cases = list(generic_cases()) + list(array_cases(marker))
    if vol_bytes is not None:
        cases += list(vol_cases(vol_bytes, n_offsets))
    counts: Counter = Counter()
    failures: list[str] = []
    slowest = 0.0
    for i, (family, what, make) in enumerate(cases):
        case_dir = tmp / f"case{i}"
        case_dir.mkdir()
        path = make(case_dir)
        start = time.perf_counter()
        try:
            read(path)
            failures.append(f"{family}: {what}: read without error")
        except OctReadError as exc:
            if "\n" in str(exc) or not str(exc).startswith(path.name):
                failures.append(f"{family}: {what}: message not one line naming the file: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - any other type is a failure of the suite
            failures.append(f"{family}: {what}: {type(exc).__name__}: {exc}")
        if get_reader(str(path)) is not None:
            failures.append(f"{family}: {what}: napari reader accepted it")
        slowest = max(slowest, time.perf_counter() - start)
        counts[family] += 1
    if marker.exists():
        failures.append("a pickle payload was executed")
    return counts, failures, slowest


def main() -> int:
    import tempfile

    vol_bytes = VOL.read_bytes() if VOL.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        counts, failures, slowest = run_all(Path(tmp), vol_bytes, n_offsets=400)
        total = time.perf_counter() - start
    print(f"{'reader':<8} {'cases':>6}")
    for family, n in sorted(counts.items()):
        print(f"{family:<8} {n:>6}")
    print(
        f"{'total':<8} {sum(counts.values()):>6}   failures {len(failures)}   slowest case {slowest:.2f} s   "
        f"all {total:.1f} s" + ("" if vol_bytes else "   (real .vol absent: no .vol mutations)")
    )
    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
