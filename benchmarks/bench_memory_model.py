"""Memory per pixel of segmentation and Grad-CAM on the CPU: the figures behind ``models.memory``.

Each case runs in its own subprocess: it builds a random volume, loads the bundled model, records the
resident size (RSS) before the job and the peak (``ru_maxrss``) after it. The extra bytes are fitted as

    extra = per_voxel * (n * H * W) + per_batch_pixel * (batch * H * W)

(the volume-sized arrays, and the network's activations for one batch). ``check_memory`` in
``src/napari_octseg/models/memory.py`` uses constants at or above the fitted ones.

    python benchmarks/bench_memory_model.py        # ~1-2 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CASES = [  # (job, n, H, W, batch)
    ("segment", 4, 496, 512, 1),
    ("segment", 16, 496, 512, 1),
    ("segment", 4, 496, 512, 4),
    ("segment", 2, 1024, 1024, 1),
    ("gradcam", 2, 496, 512, 1),
    ("gradcam", 6, 496, 512, 1),
]

CHILD = r"""
import json, resource, sys, numpy as np, torch
from napari_octseg.models.registry import load_model
from napari_octseg.core.progress import run_generator as drain
job, n, h, w, b = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(1)
vol = np.random.default_rng(0).random((n, h, w), dtype=np.float32)
model = load_model(None)
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
if job == "segment":
    from napari_octseg.inference import segment
    drain(segment(vol[:1, :64, :64], model, batch_size=1, device="cpu"))
    before = rss()
    drain(segment(vol, model, batch_size=b, device="cpu"))
else:
    from napari_octseg.explain import gradcam
    drain(gradcam(vol[:1, :64, :64], model, None, "decoder", batch_size=1, device="cpu"))
    before = rss()
    drain(gradcam(vol, model, None, "decoder", batch_size=b, device="cpu"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak}))
"""


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    rows = []
    for job, n, h, w, b in CASES:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, job, str(n), str(h), str(w), str(b)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        extra = max(0, r["peak"] - r["before"])
        rows.append((job, n, h, w, b, extra))
        print(f"{job:8s} {n:3d} x {h:4d} x {w:4d} batch {b}: extra peak {extra / 2**20:8.1f} MiB", flush=True)
    for job in ("segment", "gradcam"):
        sel = [r for r in rows if r[0] == job]
        a = np.array([[n * h * w, b * h * w] for _, n, h, w, b, _ in sel], dtype=float)
        y = np.array([r[5] for r in sel], dtype=float)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        print(f"{job}: {coef[0]:.1f} bytes per voxel + {coef[1]:.1f} bytes per batch pixel")
    print(json.dumps({"cases": rows}))


if __name__ == "__main__":
    main()
