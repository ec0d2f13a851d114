"""Calibrate the systematic lean of a checkpoint's boundaries, measured subject by subject, and store it.

A network trained on a few subjects can place a boundary a fraction of a pixel too high or too low on
average (the bundled model: ILM +1.1 µm, OPL/ONL +3.3 µm on Subject_07-08). The anatomical decoding
(:mod:`napari_octseg.ordering`) adds a signed offset to each boundary's sub-pixel edge when the checkpoint
carries one. This script decides which boundaries deserve one, fits it, and says what it is worth::

    python training/calibrate_boundaries.py --model src/napari_octseg/models/weights/octseg_default.pt \\
        --out training/results/boundary_calibration \\
        --write src/napari_octseg/models/weights/octseg_default.pt \\
        --card src/napari_octseg/models/weights/octseg_default.md

1. Each B-scan of Subject_01-08 is segmented once (``inference.segment``, probabilities kept, any stored
   calibration removed); the raw sub-pixel edges are kept, so decoding with other offsets is cheap.
2. **Which boundaries**: between-subject variation of the lean is large (several µm), so a boundary is
   corrected only if its mean signed bias has the same sign in every subject of ``--check-subjects``
   (8 of 8: a sign test, p = 0.008); the others are left alone.
3. **How much**: fitted on ``--fit-subjects`` (default the validation subjects 07-08, the eyes the
   network never trained on) by a few fixed-point rounds, offset -= signed bias (pixels, measured on the
   decoded labels exactly as ``benchmarks/bench_robustness.py`` measures it).
4. **What it is worth**: Subject_07-08 before/after (selected on validation), each fit subject held out
   with offsets fitted on the other, and the training subjects (whose leans the offsets did not see).

The Duke subjects are at the bundled model's training spacing (3.87 x 11.3 µm), so the probabilities are
on the model's own grid and the offsets are in model-grid rows. Results: ``OUT.md`` and ``OUT.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_octseg.core.atomic import atomic_path, atomic_write_text
from napari_octseg.core.boundaries import boundaries
from napari_octseg.core.classes import BOUNDARY_NAMES
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.learning import boundary_errors, confusion_matrix, scores
from napari_octseg.learning.datasets import duke_files
from napari_octseg.models import load_checkpoint
from napari_octseg.models.validate import MAX_BOUNDARY_OFFSET_PX, check_checkpoint_file
from napari_octseg.ordering import FLUID, in_order, labels_from_edges, paint_fluid, raw_edges

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "duke_dme"
DUKE_SPACING = (3.87, 11.3)


@dataclass
class Item:
    """One B-scan: its raw sub-pixel edges (8, w), where fluid wins (h, w), true labels and boundaries."""

    edges: torch.Tensor
    fluid: np.ndarray
    truth: np.ndarray
    true_bounds: np.ndarray


def collect(model_path: Path, subjects: list[int], data: Path) -> dict[int, list[Item]]:
    """Segment every B-scan of every subject once and keep what decoding with any offsets needs."""
    loaded = load_checkpoint(model_path)
    loaded.decoding = {}  # fit the raw network's lean, not the lean left after a stored calibration
    if loaded.pixel_spacing_um is not None and tuple(loaded.pixel_spacing_um) != DUKE_SPACING:
        raise SystemExit(f"{model_path}: trained at {loaded.pixel_spacing_um} µm, not the Duke {DUKE_SPACING} µm grid")
    out: dict[int, list[Item]] = {}
    for subject, path in zip(subjects, duke_files(data, subjects), strict=True):
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        vol = OctVolume(data=images.astype(np.float32) / 255.0, scale_um=(120.0, *DUKE_SPACING))
        res = run_generator(segment(vol, loaded, batch_size=2, device="cpu", return_probabilities=True))
        assert res.probabilities is not None
        items = []
        for i in range(len(images)):
            probs = torch.from_numpy(res.probabilities[i].astype(np.float32))[None]
            truth = labels[i].astype(np.uint8)
            items.append(
                Item(raw_edges(probs)[0], (probs[0].argmax(dim=0) == FLUID).numpy(), truth, boundaries(truth[None]))
            )
        out[subject] = items
        print(f"  Subject_{subject:02d}: {len(images)} B-scans segmented", flush=True)
    return out


def decode(item: Item, offsets: np.ndarray | None) -> np.ndarray:
    """Labels (h, w) of one B-scan, decoded with ``offsets`` as ``inference.segment`` does."""
    depth = item.truth.shape[0]
    edges = in_order(item.edges[None], depth, None if offsets is None else offsets.tolist())[0].numpy()
    return paint_fluid(labels_from_edges(edges, depth), item.fluid)


def measure(items: list[Item], offsets: np.ndarray | None) -> dict:
    """Signed bias per boundary (px, mean over B-scans of the A-scan mean), total bias (px) and Dice 1-7+9."""
    cm = np.zeros((10, 10), np.int64)
    biases, totals = [], []
    for item in items:
        pred = decode(item, offsets)
        cm += confusion_matrix(pred[None], item.truth[None], 10)
        _, bias, total = boundary_errors(boundaries(pred[None]), item.true_bounds)
        biases.append(bias)
        totals.append(total)
    return {
        "bias_px": np.nanmean(np.array(biases), axis=0),
        "total_px": float(np.nanmean(totals)),
        "dice": float(scores(cm)["mean_dice_scored"]),
    }


def fit(items: list[Item], mask: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Offsets (8 rows) that cancel the mean signed bias of ``items`` where ``mask`` is 1 (a few fixed-point rounds)."""
    offsets = np.zeros(8)
    for _ in range(rounds):
        step = offsets - measure(items, offsets)["bias_px"] * mask
        offsets = np.clip(step, -MAX_BOUNDARY_OFFSET_PX, MAX_BOUNDARY_OFFSET_PX)
    return offsets


def write_calibration(
    model_path: Path, target: Path, offsets: np.ndarray, subjects: list[int], corrected: np.ndarray
) -> None:
    """Copy ``model_path`` to ``target`` with ``decoding.boundary_offsets_px`` set (validated on reload)."""
    check_checkpoint_file(model_path)
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    names = ", ".join(f"Subject_{s:02d}" for s in subjects)
    payload["decoding"] = {
        "boundary_offsets_px": [round(float(v), 4) for v in offsets],
        "calibrated_on": f"Duke DME {names} (validation subjects; training/calibrate_boundaries.py)",
        "method": "mean signed bias cancelled on sub-pixel edges (model-grid rows, + = deeper) for the boundaries "
        "that lean the same way in all Duke subjects: "
        + ", ".join(b for b, c in zip(BOUNDARY_NAMES, corrected, strict=True) if c),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())
    load_checkpoint(target)  # the stored calibration passes the checkpoint validation


def replace_section(card: str, heading: str, body: str) -> str:
    """``card`` with its ``## heading`` section (up to the next ``## ``) replaced by ``body``, or inserted
    before "## Terms of use" (else appended)."""
    lines = card.splitlines()
    new = [f"## {heading}", *body.rstrip().splitlines(), ""]
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    mine = [i for i in starts if lines[i] == f"## {heading}"]
    if mine:
        end = next((i for i in starts if i > mine[0]), len(lines))
        lines[mine[0] : end] = new
    else:
        terms = [i for i in starts if lines[i].startswith("## Terms of use")]
        at = terms[0] if terms else len(lines)
        lines[at:at] = new
    return "\n".join(lines).rstrip() + "\n"


def _row_md(name: str, res: dict, ay: float) -> str:
    bias = " | ".join(f"{b:+.2f}" for b in res["bias_px"] * ay)
    return f"| {name} | {res['dice']:.3f} | {res['total_px'] * ay:+.2f} | {bias} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--fit-subjects", type=int, nargs="+", default=[7, 8], help="subjects the offsets are fitted on")
    p.add_argument(
        "--check-subjects",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5, 6, 7, 8],
        help="subjects whose leans must all share a sign for a boundary to be corrected",
    )
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "training" / "results" / "boundary_calibration")
    p.add_argument("--write", type=Path, help="write the checkpoint with the stored offsets here")
    p.add_argument("--card", type=Path, help="model card (.md) whose 'Boundary calibration' section to write")
    args = p.parse_args(argv)
    if len(args.fit_subjects) < 2:
        p.error("leave-one-subject-out needs at least two fit subjects")
    torch.set_num_threads(args.threads)
    ay = DUKE_SPACING[0]
    subjects = sorted(set(args.fit_subjects) | set(args.check_subjects))
    items = collect(args.model, subjects, args.data)
    fit_items = [it for s in args.fit_subjects for it in items[s]]

    # 1. Which boundaries lean the same way in every subject (a sign test: 8 of 8 has p = 0.008)
    leans = {s: measure(items[s], None) for s in subjects}
    signs = np.array([np.sign(leans[s]["bias_px"]) for s in args.check_subjects])
    consistent = (np.abs(signs.sum(axis=0)) == len(args.check_subjects)).astype(float)
    # 2. Their offsets, fitted on the fit subjects; the other boundaries are left alone
    final = fit(fit_items, mask=consistent)

    md = [
        "# Boundary calibration (training/calibrate_boundaries.py)",
        "",
        f"Model `{args.model.name}`; Duke DME, axial {ay} µm per row. Subject_01-06 trained the network and "
        "Subject_07-08 chose its checkpoint (validation). Signed bias = prediction - grader (µm, + = too deep), "
        "mean over B-scans of the A-scan mean; Dice = mean of classes 1-7 + fluid.",
        "",
        f"A boundary is corrected only if it leans the same way in every one of Subject "
        f"{', '.join(f'{s:02d}' for s in args.check_subjects)} (a sign test); its offset is fitted on Subject "
        f"{', '.join(f'{s:02d}' for s in args.fit_subjects)}. Corrected: "
        + (", ".join(b for b, c in zip(BOUNDARY_NAMES, consistent, strict=True) if c) or "none")
        + ".",
        "",
        "| decoding | Dice | total | " + " | ".join(BOUNDARY_NAMES) + " |",
        "|---|---|---|" + "---|" * len(BOUNDARY_NAMES),
    ]
    csv_rows: list[tuple[str, dict]] = []

    def add(name: str, res: dict) -> None:
        md.append(_row_md(name, res, ay))
        csv_rows.append((name, res))

    fit_names = "+".join(f"{s:02d}" for s in args.fit_subjects)
    add(f"Subject {fit_names}, uncalibrated", measure(fit_items, None))
    add(f"Subject {fit_names}, calibrated (offsets fitted on them: selected on validation)", measure(fit_items, final))
    for s in args.fit_subjects:
        others = [it for t in args.fit_subjects if t != s for it in items[t]]
        add(f"Subject_{s:02d} held out, uncalibrated", leans[s])
        add(
            f"Subject_{s:02d} held out, offsets fitted on the other fit subjects",
            measure(items[s], fit(others, consistent)),
        )
    rest = [s for s in args.check_subjects if s not in args.fit_subjects]
    before = np.array([np.abs(leans[s]["bias_px"]) for s in rest]) * ay if rest else None
    after_rows = {s: measure(items[s], final) for s in rest}
    for s in rest:
        add(f"Subject_{s:02d}, uncalibrated", leans[s])
        add(f"Subject_{s:02d}, calibrated", after_rows[s])
    if before is not None:
        after = np.array([np.abs(after_rows[s]["bias_px"]) for s in rest]) * ay
        md += [
            "",
            f"Mean |bias| (µm) over Subject {', '.join(f'{s:02d}' for s in rest)}, whose leans the offsets were not "
            "fitted on (the network was trained on them):",
            "",
            "| | " + " | ".join(BOUNDARY_NAMES) + " |",
            "|---|" + "---|" * len(BOUNDARY_NAMES),
            "| uncalibrated | " + " | ".join(f"{v:.2f}" for v in before.mean(axis=0)) + " |",
            "| calibrated | " + " | ".join(f"{v:.2f}" for v in after.mean(axis=0)) + " |",
        ]
    md += ["", "Stored offsets (model-grid rows, + = deeper):", "", "| " + " | ".join(BOUNDARY_NAMES) + " |"]
    md += ["|" + "---|" * len(BOUNDARY_NAMES), "| " + " | ".join(f"{o:+.3f}" for o in final) + " |"]
    text = "\n".join(md) + "\n"

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["decoding", "dice_1_7_9", "total_bias_um"] + [f"bias_{b}_um" for b in BOUNDARY_NAMES])
    for name, res in csv_rows:
        writer.writerow(
            [name, f"{res['dice']:.4f}", f"{res['total_px'] * ay:+.2f}"] + [f"{b:+.2f}" for b in res["bias_px"] * ay]
        )
    writer.writerow(["stored offsets (px)", "", ""] + [f"{o:+.3f}" for o in final])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), text)
    atomic_write_text(args.out.with_suffix(".csv"), buf.getvalue())
    print(text)
    if args.write:
        write_calibration(args.model, args.write, final, args.fit_subjects, consistent)
        print(f"wrote {args.write} with boundary offsets {np.round(final, 3).tolist()}")
    if args.card:
        body = "\n".join(md[2:]) + "\n"
        atomic_write_text(
            args.card, replace_section(args.card.read_text(encoding="utf-8"), "Boundary calibration", body)
        )
        print(f"updated {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
