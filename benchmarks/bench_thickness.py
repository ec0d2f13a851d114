"""Time the thickness pipeline on a Cirrus-sized label volume (128 x 1024 x 512) and print a table.

    python benchmarks/bench_thickness.py [--shape 128,1024,512] [--repeat 3] [--csv]

The labels are a curved, tilted retina with a foveal pit, fluid pockets and 0.5 % speckle pixels
of random classes, at Cirrus 512x128 spacing (47.2, 1.96, 11.7) µm. Stages timed: boundaries
(speed-critical: median filter, background side, fluid attribution, counts), maps, fovea search +
ETDRS table, the whole ``analyse`` (the target: <= 10 s), and optionally the CSV export.
Best of ``--repeat`` runs, wall-clock seconds, this process only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_octseg.core.boundaries import measure_labels
from napari_octseg.core.etdrs import sector_table
from napari_octseg.core.progress import run_generator
from napari_octseg.core.thickness import analyse, export_csv, maps_from_surfaces

SCALE_UM = (47.24, 1.96, 11.74)


def make_labels(n: int, depth: int, width: int, seed: int = 0) -> np.ndarray:
    """Label volume (n, depth, width) uint8 with layers, foveal pit, fluid and speckle."""
    rng = np.random.default_rng(seed)
    z = (np.arange(n) - (n - 1) / 2)[:, None] * SCALE_UM[0]
    x = (np.arange(width) - (width - 1) / 2)[None, :] * SCALE_UM[2]
    r = np.hypot(z, x)
    pit = np.exp(-((r / 700.0) ** 2))
    thick_um = [30 - 25 * pit, 70 - 60 * pit, 40 - 30 * pit, 30 - 20 * pit, 90 + 20 * pit, 45 + 0 * r, 35 + 0 * r]
    bm_um = 1300 + 0.05 * x + 0.03 * z - 2e-5 * (x**2 + z**2)
    tops = [bm_um]
    for t in reversed(thick_um):
        tops.append(tops[-1] - t)
    bounds = np.stack(tops[::-1]) / SCALE_UM[1]  # (8, n, width) rows
    rows = np.arange(depth, dtype=np.float32)[None, :, None]
    labels = np.zeros((n, depth, width), np.uint8)
    for b in bounds.astype(np.float32):
        labels += rows >= b[:, None, :]
    cyst = (np.hypot(z - 300, x + 400) < 400)[:, None, :] & (np.abs(rows - bounds[3][:, None, :] + 15) < 10)
    labels[cyst] = 9
    speckle = rng.random(labels.shape, dtype=np.float32) < 0.005
    labels[speckle] = rng.integers(0, 10, int(speckle.sum()), dtype=np.uint8)
    return labels


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128,1024,512", help="n_bscans,depth,width")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--csv", action="store_true", help="also time the per-A-scan + sector CSV export")
    args = parser.parse_args()
    n, depth, width = (int(v) for v in args.shape.split(","))
    t0 = time.perf_counter()
    labels = make_labels(n, depth, width)
    print(
        f"labels {labels.shape} uint8 ({labels.nbytes / 1e6:.0f} MB) built in {time.perf_counter() - t0:.1f} s; "
        f"CPU cores visible: {os.cpu_count()}"
    )

    rows: list[tuple[str, float]] = []
    t, surfaces = best_of(args.repeat, lambda: run_generator(measure_labels(labels)))
    rows.append(("boundaries (8 surfaces + fluid)", t))
    t, maps = best_of(args.repeat, lambda: maps_from_surfaces(surfaces, SCALE_UM))
    rows.append(("thickness maps (9)", t))
    t, table = best_of(
        args.repeat,
        lambda: sector_table(maps.maps, maps.unit, SCALE_UM, "volume", "OD", inner_thickness=maps.inner_retina()),
    )
    rows.append(("fovea + ETDRS table (9 layers)", t))
    t, report = best_of(args.repeat, lambda: run_generator(analyse(labels, SCALE_UM, "OD", "volume")))
    rows.append(("analyse: all maps + ETDRS (target <= 10 s)", t))
    if args.csv:
        with tempfile.TemporaryDirectory() as tmp:

            def write() -> None:
                export_csv(report, Path(tmp) / "a.csv", Path(tmp) / "e.csv", "bench", force=True)

            t, _ = best_of(1, write)
            size = (Path(tmp) / "a.csv").stat().st_size
        rows.append((f"CSV export ({n * width * 9:,} rows, {size / 1e6:.0f} MB)", t))

    print(f"\n{'stage':<48}{'seconds':>9}")
    for name, sec in rows:
        print(f"{name:<48}{sec:>9.2f}")
    print(
        f"\nfovea found at B-scan {table.fovea[0]:.0f}, A-scan {table.fovea[1]:.0f} "
        f"(pit placed at {(n - 1) / 2:.1f}, {(width - 1) / 2:.1f})"
    )
    c0 = table.get("total retina", "C0")
    print(f"total retina C0 mean {c0.mean:.1f} µm over {c0.n_ascans} A-scans")


if __name__ == "__main__":
    main()
