"""``octseg segment`` from start to files written, as a researcher runs it on one eye's volume.

The volume is one Duke eye's 11 B-scans in order, repeated to ``--n-bscans`` (49 by default; 496 x 512 after
edge padding, as ``bench_segment.py --data duke-eye``), saved as an ImageJ TIFF whose resolution tags carry
the µm scale (3.87 µm axial, 11.3 µm lateral), so the command reads the scale as it would from a user's file.

Each run is a fresh ``python -m napari_octseg segment VOLUME --out DIR`` process into an empty folder (labels
TIFF, labels sidecar, quality CSV); its wall time is taken from before the process starts to its exit. Between
runs a separate process times a float32 2048 x 2048 ``torch.matmul`` (this VM's speed swings by 2x over a day)
and the start-up alone (``python -c "import torch, napari_octseg.cli"``). The command's own line gives the
seconds spent segmenting.

Usage::

    python benchmarks/bench_cli.py [--subject 7] [--n-bscans 49] [--repeats 3] [--out benchmarks/results/cli.txt]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DUKE = ROOT.parent / "shared" / "data" / "duke_dme"
RESULTS = Path(__file__).resolve().parent / "results"
AXIAL_UM, LATERAL_UM, BSCAN_UM = 3.87, 11.3, 65.0

_MATMUL = """
import time, torch
torch.set_num_threads({threads})
a = torch.randn(2048, 2048); b = torch.randn(2048, 2048); a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
print(2 * 2048**3 / best / 1e9)
"""


def make_tiff(path: Path, subject: int, n: int, width: int = 512) -> None:
    """Save ``n`` B-scans of Duke Subject ``subject`` (its 11, in order, repeated) as an ImageJ TIFF in µm."""
    import tifffile

    with np.load(DUKE / f"Subject_{subject:02d}.npz", allow_pickle=False) as z:
        images = z["images"]
    pad = max(0, width - images.shape[2])
    images = np.pad(images, ((0, 0), (0, 0), (pad // 2, pad - pad // 2)), mode="edge")
    start = (images.shape[2] - width) // 2
    volume = np.concatenate([images[:, :, start : start + width]] * -(-n // len(images)))[:n]
    data = volume.astype(np.uint8) if volume.max() > 1.5 else np.round(volume * 255).astype(np.uint8)
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / LATERAL_UM, 1 / AXIAL_UM), metadata={"spacing": BSCAN_UM, "unit": "um"}
    )


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return wall, proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", type=int, default=7)
    parser.add_argument("--n-bscans", type=int, default=49)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for the matmul")
    parser.add_argument("--mirror-check", action="store_true", help="time octseg segment --mirror-check")
    parser.add_argument("--out", type=Path, default=RESULTS / "cli.txt")
    args = parser.parse_args()
    if not DUKE.is_dir():
        print(f"skipped: {DUKE} is absent (the Duke data lives outside the project)")
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    lines = [
        f"# bench_cli.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        f"octseg segment{' --mirror-check' if args.mirror_check else ''} on Duke Subject_{args.subject:02d}'s "
        f"B-scans repeated to {args.n_bscans} "
        f"(496 x 512, uint8 ImageJ TIFF, {AXIAL_UM} x {LATERAL_UM} µm); start to files written",
        f"{'run':>3} {'wall s':>7} {'segmenting s':>12} {'start-up s':>10} {'matmul GFLOP/s':>14}",
    ]
    print("\n".join(lines), flush=True)
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / f"eye{args.n_bscans}.tif"
        make_tiff(volume, args.subject, args.n_bscans)
        for k in range(args.repeats):
            matmul = float(_timed([sys.executable, "-c", _MATMUL.format(threads=args.threads)], env)[1].split()[-1])
            startup, _ = _timed([sys.executable, "-c", "import torch, napari_octseg.cli"], env)
            out = Path(tmp) / f"out{k}"
            cmd = [sys.executable, "-m", "napari_octseg", "segment", str(volume), "--out", str(out)]
            wall, text = _timed(cmd + (["--mirror-check"] if args.mirror_check else []), env)
            if not (out / f"{volume.stem}.labels.tif").is_file() or not (out / f"{volume.stem}.qc.csv").is_file():
                raise SystemExit(f"run {k}: the outputs were not written")
            found = re.search(r"\(([\d.]+) s, [\d.]+ B-scans/s", text)
            seg = float(found.group(1)) if found else float("nan")
            walls.append(wall)
            line = f"{k + 1:>3} {wall:>7.2f} {seg:>12.2f} {startup:>10.2f} {matmul:>14.1f}"
            lines.append(line)
            print(line, flush=True)
    lines.append(f"wall: median {np.median(walls):.2f} s, range {min(walls):.2f}-{max(walls):.2f} s (target < 10 s)")
    print(lines[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
