"""Which anatomical line does each Duke grader boundary follow? Mean A-scan intensity around it.

For every A-scan of Duke Subject_01-08 without fluid, the grey-value profile is aligned on a grader
boundary (its first row = offset 0) and averaged. Bright lines of the outer retina (ELM, ellipsoid
zone, RPE) show up as peaks at fixed offsets; the median thickness of each class in the same A-scans
says where the next boundary lies. The printed table and ``benchmarks/results/boundary_profiles.txt``
back the class and boundary names used in the code, the CSVs and the README.

Run::

    python benchmarks/bench_boundary_profiles.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_octseg.core.atomic import atomic_write_text
from napari_octseg.core.classes import CLASS_NAMES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "duke_dme"
BEFORE, AFTER = 12, 20


def profiles(first_class: int) -> tuple[np.ndarray, dict[int, float]]:
    """Mean profile (offsets -BEFORE..AFTER-1) aligned on the first row of ``first_class``; class medians."""
    rows, thick = [], {c: [] for c in range(1, 8)}
    for path in sorted(DATA.glob("Subject_*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"].astype(np.float32), npz["labels"]
        for b in range(len(images)):
            for c in range(0, images.shape[2], 2):
                col = labels[b, :, c]
                if (col == 9).any():
                    continue
                top = np.flatnonzero(col == first_class)
                if not len(top) or top[0] < BEFORE or top[0] + AFTER > len(col):
                    continue
                rows.append(images[b, top[0] - BEFORE : top[0] + AFTER, c])
                for k in thick:
                    thick[k].append(int((col == k).sum()))
    return np.mean(rows, axis=0), {k: float(np.median(v)) for k, v in thick.items()}


def main() -> int:
    if not DATA.is_dir():
        print(f"needs {DATA}", file=sys.stderr)
        return 1
    lines = ["# Grey-value profiles around Duke grader boundaries (benchmarks/bench_boundary_profiles.py)", ""]
    for cls in (6, 7):
        prof, med = profiles(cls)
        peaks = [i for i in range(1, len(prof) - 1) if prof[i] >= prof[i - 1] and prof[i] >= prof[i + 1]]
        lines.append(f"aligned on the top of class {cls} ({CLASS_NAMES[cls]}); offset in rows (3.87 µm), mean grey")
        for i, v in enumerate(prof):
            mark = "  <- local peak" if i in peaks else ""
            lines.append(f"  {i - BEFORE:+3d} {v:6.1f} {'#' * int(v / 5)}{mark}")
        lines.append("  median class thickness (rows): " + ", ".join(f"{CLASS_NAMES[k]} {v:g}" for k, v in med.items()))
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results" / "boundary_profiles.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
