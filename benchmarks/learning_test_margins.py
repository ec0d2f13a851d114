"""Measure the margins of the learning tests over seeds and torch thread counts.

The learning tests assert that training improves something (a loss falls, a Dice rises); a threshold
tuned on one machine fails on another. This script reruns each test's measurement for several seeds and
thread counts and prints the smallest margin, so each threshold can sit well inside what was measured.

Run (about 3-5 minutes on 2 cores)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/learning_test_margins.py --seeds 0 1 2 3 4 --threads 1 2

Results are written to ``benchmarks/results/learning_test_margins.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_test_margins.csv")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    # The tests' own helpers, so the script measures exactly what they assert.
    import test_finetune
    import test_learning_fit
    import torch

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                base, new, _, _ = test_finetune.finetune_gain(Path(tmp), seed=seed)
            first, best, acc = test_learning_fit.fit_bands(seed=seed)
            row = {
                "threads": threads,
                "seed": seed,
                "finetune_base_dice": round(base, 4),
                "finetune_new_dice": round(new, 4),
                "finetune_gain": round(new - base, 4),
                "bands_first_val_loss": round(first, 4),
                "bands_best_val_loss": round(best, 4),
                "bands_loss_ratio": round(best / first, 4),
                "bands_accuracy": round(acc, 4),
            }
            rows.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    gain = min(r["finetune_gain"] for r in rows)
    print(f"finetune gain: min {gain:.4f} (test asks > {test_finetune.MIN_FINETUNE_GAIN})")
    print(
        f"bands accuracy: min {min(r['bands_accuracy'] for r in rows):.4f} "
        f"(test asks > {test_learning_fit.MIN_BANDS_ACCURACY}); "
        f"loss ratio: max {max(r['bands_loss_ratio'] for r in rows):.4f} "
        f"(test asks < {test_learning_fit.MAX_BANDS_LOSS_RATIO})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
