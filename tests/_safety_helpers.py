"""Shared by tests/test_safety_*.py: crafted hostile files and a subprocess runner with a memory ceiling."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Child: apply RLIMIT_AS, run ``octseg`` (optionally after a Python prelude), report ru_maxrss at exit.
CHILD = r"""
import atexit, os, resource, sys
limit = int(os.environ.get("OCTSEG_TEST_AS", "0"))
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
def _report():
    # VmHWM is this process's own peak: ru_maxrss is inherited from the parent across fork and exec on
    # Linux, so under a long pytest run it would report pytest's peak instead of the child's.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    with open(os.environ["OCTSEG_TEST_RSS"], "w") as fh:
        fh.write(str(peak))
atexit.register(_report)
exec(os.environ.get("OCTSEG_TEST_PRELUDE", ""))
from napari_octseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_octseg(
    *args: str | os.PathLike,
    address_space: int | None = None,
    timeout: float = 900,
    prelude: str = "",
    env: dict | None = None,
) -> tuple[int, str, str, int]:
    """Run ``octseg ARGS`` in a fresh interpreter; return (exit code, stdout, stderr, peak RSS bytes).

    ``address_space`` caps the child's virtual memory (``RLIMIT_AS``): a guard that fails cannot take
    the machine down, and the test sees a failure instead.
    """
    with tempfile.NamedTemporaryFile(suffix=".rss", delete=False) as fh:
        rss_file = fh.name
    child_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "OCTSEG_TEST_RSS": rss_file,
        "OCTSEG_TEST_AS": str(address_space or 0),
        "OCTSEG_TEST_PRELUDE": prelude,
        **(env or {}),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env,
        )
        rss = int(Path(rss_file).read_text() or 0) if Path(rss_file).stat().st_size else 0
        return proc.returncode, proc.stdout, proc.stderr, rss
    finally:
        os.unlink(rss_file)


def one_error_line(stderr: str, prefix: str) -> str:
    """The single line of ``stderr`` (progress bars aside); asserts there is exactly one and no traceback."""
    # a progress bar redraws with carriage returns: keep what follows the last one on each line
    lines = [ln.split("\r")[-1] for ln in stderr.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


# -- crafted files --------------------------------------------------------------------------------------------------


def e2e_crawler(path: Path, chunks: int = 400, folders: int = 65536) -> Path:
    """An .e2e whose chunk chain moves forward 64 bytes at a time, each chunk claiming ``folders`` folders."""
    table = 52 + folders * 44
    size = 88 + 64 * chunks + table + 64
    data = bytearray(size)
    data[0:4] = b"CMDb"
    data[36:40] = b"MDbM"
    for k in range(chunks + 1):
        pos = 88 + 64 * k
        if pos + 40 <= size:
            struct.pack_into("<I", data, pos + 36, folders)
        last = pos + table - 44
        if last + 12 <= size:
            struct.pack_into("<3I", data, last, 0, pos + 4, 0)  # next chunk = start + size + 60 = pos + 64
    path.write_bytes(bytes(data))
    return path


def e2e_plausible(path: Path, chunks: int = 3, folders: int = 4) -> Path:
    """A small .e2e whose chain is well formed (each chunk's table, then its data, then the next chunk)."""
    data = bytearray(b"CMDb".ljust(36, b"\0") + b"MDbMDir".ljust(52, b"\0"))
    for _ in range(chunks):
        pos = len(data)
        table_end = pos + 52 + folders * 44
        header = bytearray(52)
        header[:4] = b"MDbM"
        struct.pack_into("<I", header, 36, folders)
        rows = bytearray()
        for f in range(folders):
            start = table_end + f * 100
            rows += struct.pack("<3I", pos, start, 40).ljust(44, b"\0")
        data += header + rows + bytes((folders - 1) * 100 + 40 + 60)
    path.write_bytes(bytes(data))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (CRC fixed, pixel data a few bytes)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    struct.pack_into(">II", raw, 16, width, height)
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A ~335-byte JPEG whose SOF header claims ``width`` x ``height``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16)).save(buf, "JPEG")
    raw = bytearray(buf.getvalue())
    sof = raw.find(b"\xff\xc0")
    struct.pack_into(">HH", raw, sof + 5, height, width)
    path.write_bytes(bytes(raw))
    return path


def zlib_tiff_bomb(path: Path, shape: tuple[int, int, int] = (16, 4096, 4096)) -> Path:
    """A zlib TIFF of zeros, written page by page (the whole array never exists here)."""
    import tifffile

    page = np.zeros(shape[1:], dtype=np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            (page for _ in range(shape[0])), shape=shape, dtype=np.uint8, compression="zlib", photometric="minisblack"
        )
    return path


def npz_bomb(path: Path, key_shapes: dict[str, tuple[int, ...]], dtype: str = "|u1") -> Path:
    """An .npz whose deflated members are arrays of zeros of ``key_shapes``, streamed to disk."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, shape in key_shapes.items():
            header = {"descr": dtype, "fortran_order": False, "shape": shape}
            text = repr(header).encode("latin1")
            pad = 64 - (10 + len(text) + 1) % 64
            head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) + pad + 1) + text + b" " * pad + b"\n"
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                fh.write(head)
                block = bytes(1 << 22)
                for start in range(0, n, len(block)):
                    fh.write(block[: min(len(block), n - start)])
    return path


def heyex_xml(folder: Path, urls: list[str]) -> Path:
    """A HEYEX XML export in ``folder`` whose OCT images point at ``urls``."""
    images = "".join(
        f"<Image><ImageNumber>{i}</ImageNumber><ImageType><Type>OCT</Type></ImageType>"
        f"<ImageData><ExamURL>{url}</ExamURL></ImageData></Image>"
        for i, url in enumerate(urls)
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><HEDX><BODY><Patient><Study><Series>'
        f"<ScanPattern>3</ScanPattern>{images}</Series></Study></Patient></BODY></HEDX>"
    )
    path = folder / "export.xml"
    path.write_text(xml, encoding="utf-8")
    return path


def save_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


__all__ = ["ROOT", "resource", "run_octseg", "one_error_line"]
