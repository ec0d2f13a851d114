"""Subject adaptation by fine-tuning on 2 corrected B-scans (Duke DME Subject_07 and Subject_08).

For each validation subject the base model (trained on Subject_01-06) is fine-tuned on 2 of the
subject's 11 annotated B-scans, whose ground truth plays the user's corrections, and scored on the
subject's 9 OTHER B-scans before and after: mean Dice over the 7 layers (classes 1-7) and over layers
+ fluid (1-7, 9), from the confusion matrix pooled over the 9 B-scans. "other subj." scores the other
validation subject (never seen in fine-tuning) before/after: a measure of what fine-tuning on one eye
does to the model elsewhere. Self-replay (the default) uses the images of the subject's other
B-scans, never their ground truth: in a user's volume those are the B-scans nobody corrected.
Wall time of fine-tuning is measured per run (the CPU may be shared:
the load average is printed, and the process CPU time: on an idle 2-core machine the wall time
is about CPU time / 2).

Usage::

    python benchmarks/bench_finetune.py [--model PATH] [--variants default no-self replay ...]
        [--bscans 3 7] [--epochs N] [--threads 2] [--csv benchmarks/results/finetune.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.learning.finetune import DEFAULT_EPOCHS, FinetuneOptions, finetune, load_replay
from napari_octseg.learning.metrics import confusion_matrix, scores
from napari_octseg.models import load_model

ROOT = Path(__file__).resolve().parents[1]
DUKE = ROOT.parent / "shared" / "data" / "duke_dme"

#: name -> keyword arguments of finetune() (replay is filled in when asked for). Every variant but the
#: "no-self" ones also self-replays the subject's uncorrected B-scans (images only, labelled by the base
#: model), as the product does by default.
VARIANTS: dict[str, dict] = {
    "default": {},
    "no-self": {"options": FinetuneOptions(self_replay_bscans=0)},
    "no-self-24": {"epochs": 24, "options": FinetuneOptions(self_replay_bscans=0)},
    "replay": {"replay": True},
    "replay-no-self": {"replay": True, "options": FinetuneOptions(self_replay_bscans=0)},
    "epochs-24": {"epochs": 24},
    "lr-3e-5": {"lr": 3e-5},
    "lr-1e-3": {"lr": 1e-3},
    "decoder": {"freeze_encoder_epochs": 10**6},
    "no-freeze": {"freeze_encoder_epochs": 0},
    "bn-train": {"options": FinetuneOptions(freeze_batchnorm=False)},
}


def load_subject(number: int) -> tuple[OctVolume, np.ndarray]:
    with np.load(DUKE / f"Subject_{number:02d}.npz") as z:
        return OctVolume(data=z["images"].astype(np.float32)), z["labels"].astype(np.uint8)


def dice(model, volume: OctVolume, labels: np.ndarray, idx: list[int]) -> tuple[float, float]:
    """(mean Dice classes 1-7, mean Dice classes 1-7 + 9) over the B-scans ``idx``, pooled."""
    sub = OctVolume(data=volume.data[idx])
    result = run_generator(segment(sub, model, device="cpu"))
    s = scores(confusion_matrix(result.labels, labels[idx], model.n_classes))
    return float(s["mean_dice_layers"]), float(s["mean_dice_scored"])


_NUMERIC = (
    "seconds",
    "cpu_seconds",
    "dice_layers_before",
    "dice_layers_after",
    "dice_scored_before",
    "dice_scored_after",
)


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model (default: the bundled one)")
    parser.add_argument("--variants", nargs="+", default=["default", "no-self", "replay"], choices=list(VARIANTS))
    parser.add_argument("--subjects", nargs="+", type=int, default=[7, 8], help="validation subjects loaded")
    parser.add_argument("--adapt", nargs="+", type=int, help="subjects to fine-tune on (default: all --subjects)")
    parser.add_argument("--append", action="store_true", help="add rows to an existing --csv instead of replacing it")
    parser.add_argument("--bscans", nargs=2, type=int, default=[3, 7], help="the 2 'corrected' B-scans (0-10)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "finetune.csv"))
    args = parser.parse_args()
    if not DUKE.is_dir():
        print(f"skipped: {DUKE} is absent (the Duke data lives outside the project)")
        return 0
    torch.set_num_threads(args.threads)
    base = load_model(args.model, device="cpu")
    print(f"base model: {base.source} ({base.model.n_parameters():,} parameters)")
    print(f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    replay = None
    if any(VARIANTS[v].get("replay") for v in args.variants):
        replay = load_replay([DUKE / f"Subject_{k:02d}.npz" for k in range(1, 7)], per_file=4, seed=0)
    subjects = {k: load_subject(k) for k in args.subjects}
    rows: list[dict] = []
    if args.append and Path(args.csv).is_file():
        with Path(args.csv).open(newline="") as f:
            rows = list(csv.DictReader(f))
    before: dict[int, tuple[float, float]] = {}
    base_all: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subj, (volume, labels) in subjects.items():
            if args.adapt and subj not in args.adapt:
                continue
            train = sorted(args.bscans)
            test = [i for i in range(volume.n_bscans) if i not in train]
            others = [k for k in subjects if k != subj]
            if subj not in before:
                before[subj] = dice(base, volume, labels, test)
            for name in args.variants:
                kwargs = dict(VARIANTS[name])
                kwargs["replay"] = replay if kwargs.get("replay") else None
                t0, c0 = time.perf_counter(), time.process_time()
                kwargs.setdefault("epochs", args.epochs)
                gen = finetune(
                    volume,
                    labels,
                    train,
                    base,
                    out_path=Path(tmp) / f"{subj}-{name}.pt",
                    device="cpu",
                    **kwargs,
                )
                result = run_generator(gen)
                seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
                after = dice(result.model, volume, labels, test)
                other = {}
                for k in others:
                    ov, ol = subjects[k]
                    all_idx = list(range(ov.n_bscans))
                    if k not in base_all:
                        base_all[k] = dice(base, ov, ol, all_idx)[1]
                    other[k] = (base_all[k], dice(result.model, ov, ol, all_idx)[1])
                row = {
                    "subject": f"Subject_{subj:02d}",
                    "variant": name,
                    "train_bscans": " ".join(map(str, train)),
                    "epochs_run": len(result.history),
                    "best_epoch": result.best_epoch,
                    "stopped": result.stopped_reason,
                    "seconds": round(seconds, 1),
                    "cpu_seconds": round(cpu_seconds, 1),
                    "dice_layers_before": round(before[subj][0], 4),
                    "dice_layers_after": round(after[0], 4),
                    "dice_scored_before": round(before[subj][1], 4),
                    "dice_scored_after": round(after[1], 4),
                    "other_subject_scored_before": round(np.mean([v[0] for v in other.values()]), 4) if other else "",
                    "other_subject_scored_after": round(np.mean([v[1] for v in other.values()]), 4) if other else "",
                    "load_avg": round(os.getloadavg()[0], 1),
                }
                rows.append(row)
                _write_csv(Path(args.csv), rows)  # after every run, so a long benchmark leaves partial results
                print(
                    f"{row['subject']} {name:<9} {seconds:6.1f} s  layers {row['dice_layers_before']:.3f} -> "
                    f"{row['dice_layers_after']:.3f}  layers+fluid {row['dice_scored_before']:.3f} -> "
                    f"{row['dice_scored_after']:.3f}  other subj. {row['other_subject_scored_before']} -> "
                    f"{row['other_subject_scored_after']}  "
                    f"({row['stopped']}, best {row['best_epoch']}/{row['epochs_run']})",
                    flush=True,
                )
    out = Path(args.csv)
    print(f"\nbase: {base.source}\n")
    header = (
        f"{'subject':<11} {'variant':<10} {'time s':>7} {'CPU s':>6} {'Dice 1-7 before/after':>22} "
        f"{'Dice 1-7+9 before/after':>24} {'other subj.':>14}"
    )
    print(header)
    for r in rows:
        r = {k: (float(v) if k in _NUMERIC else v) for k, v in r.items()}
        print(
            f"{r['subject']:<11} {r['variant']:<10} {r['seconds']:>7.1f} {r['cpu_seconds']:>6.0f} "
            f"{r['dice_layers_before']:>10.3f} / {r['dice_layers_after']:<9.3f} "
            f"{r['dice_scored_before']:>11.3f} / {r['dice_scored_after']:<10.3f} "
            f"{r['other_subject_scored_before']!s:>6}/{r['other_subject_scored_after']!s:<7}"
        )
    print(f"\nwritten {out}")
    _print_peak_rss()
    return 0


def _print_peak_rss() -> None:
    """The process's peak resident memory (Linux ``ru_maxrss`` is in KiB; macOS reports bytes)."""
    import resource
    import sys as _sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if _sys.platform == "darwin" else peak * 1024
    print(f"peak RSS of this run (whole process): {peak_bytes / 1e9:.2f} GB")


if __name__ == "__main__":
    sys.exit(main())
