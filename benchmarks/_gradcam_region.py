"""Region questions for ``bench_gradcam.py``: does a region's Grad-CAM map differ from the whole B-scan's?

For each class, rectangles a user might draw over it; the region's map (Seg-Grad-CAM) is compared with
the maps for the class's own pixels and for every pixel (Spearman rank correlation, mass inside the box).
"""

from __future__ import annotations

import time

import numpy as np

from napari_octseg.core.classes import SCORED_CLASSES
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.explain import gradcam
from napari_octseg.explain.faithfulness import rank_correlation
from napari_octseg.inference import segment
from napari_octseg.models import LoadedModel


def region_boxes(pred: np.ndarray, c: int, n: int = 2, width_px: int = 96, pad_px: int = 8) -> list[tuple[int, ...]]:
    """Rectangles (y0, x0, y1, x1) a user might draw over class ``c``: ``n`` windows of ``width_px``
    columns spread over the columns holding the class, each spanning the class's rows there +- ``pad_px``."""
    cols = np.flatnonzero((pred == c).any(0))
    if cols.size == 0:
        return []
    boxes = []
    for q in np.linspace(0, 1, n + 2)[1:-1]:
        centre = int(cols[int(q * (cols.size - 1))])
        x0 = max(0, min(centre - width_px // 2, pred.shape[1] - width_px))
        rows = np.flatnonzero((pred[:, x0 : x0 + width_px] == c).any(1))
        y0, y1 = max(0, int(rows[0]) - pad_px), min(pred.shape[0], int(rows[-1]) + 1 + pad_px)
        boxes.append((y0, x0, y1, x0 + width_px))
    return boxes


def bench_region(model: LoadedModel, layers: list[str], scans: list[tuple[int, int, np.ndarray]]) -> list[dict]:
    """Region question vs whole-B-scan questions: one row per (layer, class, B-scan, rectangle).

    ``spearman_vs_predicted`` / ``spearman_vs_image``: rank correlation of the region's map with the map for
    the class's own pixels (the default question) / for every pixel; ``mass_in_box_region`` and
    ``mass_in_box_predicted``: the share of each map's mass inside the rectangle (the box's share of the
    B-scan's area is ``box_area``). ``scans``: (subject, B-scan index, image (depth, width)) triples."""
    rows: list[dict] = []
    for subject, b, img in scans:
        t0 = time.perf_counter()
        pred = run_generator(segment(OctVolume(data=img[None]), model, device="cpu")).labels[0]
        present = [c for c in SCORED_CLASSES if (pred == c).any()]
        for layer in layers:
            whole = {
                t: run_generator(gradcam(img, model, present, layer, target=t, device="cpu")).heatmaps[:, 0]
                for t in ("predicted", "image")
            }
            for i, c in enumerate(present):
                boxes = region_boxes(pred, c)
                masks = np.zeros((len(boxes), *img.shape), dtype=bool)
                for j, (y0, x0, y1, x1) in enumerate(boxes):
                    masks[j, y0:y1, x0:x1] = True
                stack = np.repeat(img[None], len(boxes), axis=0)
                res = run_generator(
                    # window=False: copies of one B-scan, each answered at full height like the whole-B-scan maps
                    gradcam(stack, model, [c], layer, region=masks, batch_size=len(boxes), device="cpu", window=False)
                )
                for j, box in enumerate(boxes):
                    heat = res.heatmaps[0, j].astype(np.float32)
                    pw = whole["predicted"][i].astype(np.float32)
                    rows.append(
                        {
                            "layer": layer,
                            "class": c,
                            "subject": subject,
                            "bscan": int(b),
                            "box": "-".join(map(str, box)),
                            "box_area": round(float(masks[j].mean()), 4),
                            "spearman_vs_predicted": rank_correlation(heat, pw),
                            "spearman_vs_image": rank_correlation(heat, whole["image"][i].astype(np.float32)),
                            "mass_in_box_region": float(heat[masks[j]].sum() / max(heat.sum(), 1e-12)),
                            "mass_in_box_predicted": float(pw[masks[j]].sum() / max(pw.sum(), 1e-12)),
                        }
                    )
        print(f"  Subject_{subject:02d} B-scan {b}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def summarise_region(rows: list[dict]) -> list[dict]:
    """Per layer: median (and quartiles of) Spearman region vs whole, and mass inside the rectangle."""
    out = []
    for layer in dict.fromkeys(r["layer"] for r in rows):
        sel = [r for r in rows if r["layer"] == layer]

        def q(key: str, sel: list[dict] = sel) -> list[float]:
            v = np.array([r[key] for r in sel], dtype=np.float64)
            v = v[np.isfinite(v)]
            return [round(float(x), 3) for x in np.percentile(v, [25, 50, 75])] if v.size else [np.nan] * 3

        sp, si = q("spearman_vs_predicted"), q("spearman_vs_image")
        mr, mp = q("mass_in_box_region"), q("mass_in_box_predicted")
        out.append(
            {
                "layer": layer,
                "questions": len(sel),
                "median_spearman_vs_predicted": sp[1],
                "iqr_spearman_vs_predicted": f"{sp[0]}-{sp[2]}",
                "median_spearman_vs_image": si[1],
                "median_mass_in_box_region": mr[1],
                "median_mass_in_box_predicted": mp[1],
                "median_box_area": q("box_area")[1],
            }
        )
    return out
