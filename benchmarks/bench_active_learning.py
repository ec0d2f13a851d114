"""Does correcting the B-scans the quality ranking picks teach the model more than correcting random ones?

Data: one validation subject (Duke Subject_07 or 08; never used to train or calibrate) under one shift of
``_shifts.py`` (default ``speckle 1 frame``: single-frame speckle). Protocol, as a user of the Fine-tune dock:

1. segment the shifted volume with the bundled model (``segment(..., return_uncertainty=True)``);
2. ``correction_candidates(quality, 2)`` picks the 2 B-scans to correct first ("ranked"); ``--draws`` random pairs
   (``numpy.random.default_rng(1000 + d)``) are the baseline;
3. for each pick, the grader's labels of those 2 B-scans stand in for the user's corrections and the model is
   fine-tuned with :func:`napari_octseg.learning.finetune.finetune` (the Fine-tune dock's call; a short recipe:
   ``--epochs`` epochs of ``--samples`` crops, encoder frozen in the first, self-replay of 4 uncorrected
   B-scans); each pick is fine-tuned with the same ``--seeds`` (training noise is not credited to a pick);
4. the mean per-B-scan Dice (classes 1-7 and fluid) of the *other* B-scans of the volume, before and after.

Reported: per run the picked B-scans, their Dice before, the others' Dice before / after and the gain; then the
mean gain of the ranked picks vs the mean over the random draws.

Usage::

    python benchmarks/bench_active_learning.py [--subject 8] [--shift "speckle 1 frame"] [--draws 3]
        [--seeds 0] [--epochs 4] [--samples 8] [--threads 1] [--out benchmarks/results/active_learning.txt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _quality_data import DUKE, bscan_dice, write_report
from _shifts import DUKE_SCALE_UM, SHIFTS, shift_volume

from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.learning.finetune import FinetuneOptions, finetune
from napari_octseg.models import load_model
from napari_octseg.quality import correction_candidates

RESULTS = Path(__file__).resolve().parent / "results"


def random_picks(n_bscans: int, draws: int, k: int = 2) -> list[list[int]]:
    """``draws`` random sets of ``k`` B-scans, draw ``d`` from ``default_rng(1000 + d)``."""
    return [sorted(np.random.default_rng(1000 + d).choice(n_bscans, k, replace=False).tolist()) for d in range(draws)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--subject", type=int, default=8, choices=(7, 8))
    parser.add_argument("--shift", default="speckle 1 frame", choices=list(SHIFTS))
    parser.add_argument("--draws", type=int, default=3, help="random pairs (>= 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds, the same for each pick")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8, help="augmented crops per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--mirror-check", action="store_true", help="rank by the quality with segment(mirror_check=True)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "active_learning.txt")
    args = parser.parse_args()
    if not DUKE.is_dir():
        print(f"skipped: {DUKE} is absent (the Duke data lives outside the project)")
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    with np.load(DUKE / f"Subject_{args.subject:02d}.npz") as z:
        images, labels = z["images"], z["labels"].astype(np.uint8)
    x, y, scale = shift_volume(args.shift, images, labels, DUKE_SCALE_UM, seed=args.subject)
    volume = OctVolume(data=x, scale_um=scale)
    base = run_generator(segment(volume, model, device="cpu", return_uncertainty=True, mirror_check=args.mirror_check))
    assert base.quality is not None
    base_dice = bscan_dice(base.labels, y)
    n = len(x)
    picks = [("ranked", correction_candidates(base.quality, 2))]
    picks += [(f"random {d + 1}", p) for d, p in enumerate(random_picks(n, args.draws))]
    out = [
        f"# bench_active_learning.py, model {model.source}, torch threads {args.threads}, "
        f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}",
        f"Subject_{args.subject:02d} under '{args.shift}' ({n} B-scans, mean Dice {np.nanmean(base_dice):.3f}); "
        f"fine-tuned {args.epochs} epochs x {args.samples} crops on the 2 picked B-scans (grader labels as the "
        f"corrections), fine-tuning seeds {args.seeds}; Dice = mean over the other {n - 2} B-scans (1-7 + fluid)",
        ("quality per B-scan (with the mirror check): " if args.mirror_check else "quality per B-scan: ")
        + " ".join(f"{i}:{q:.2f}" for i, q in enumerate(base.quality.score)),
        "Dice per B-scan:    " + " ".join(f"{i}:{d:.2f}" for i, d in enumerate(base_dice)),
        f"{'pick':<10}{'B-scans':<9}{'seed':>5}{'their Dice':>11}{'others before':>15}{'after':>8}{'gain':>8}{'s':>6}",
    ]
    print("\n".join(out), flush=True)
    gains: dict[str, list[float]] = {}
    opts_base = dict(samples_per_epoch=args.samples, self_replay_bscans=4)
    with tempfile.TemporaryDirectory() as tmp:
        for name, chosen in picks:
            others = [i for i in range(n) if i not in chosen]
            before = float(np.nanmean(base_dice[others]))
            for seed in args.seeds:
                t0 = time.perf_counter()
                gen = finetune(
                    volume,
                    y,
                    chosen,
                    model,
                    out_path=Path(tmp) / f"{name.replace(' ', '_')}_{seed}.pt",
                    epochs=args.epochs,
                    freeze_encoder_epochs=1,
                    device="cpu",
                    options=FinetuneOptions(seed=seed, **opts_base),  # type: ignore[arg-type]
                )
                tuned = run_generator(gen).model
                sub = OctVolume(data=x[others], scale_um=scale)
                pred = run_generator(segment(sub, tuned, device="cpu")).labels
                after = float(np.nanmean(bscan_dice(pred, y[others])))
                gains.setdefault(name, []).append(after - before)
                out.append(
                    f"{name:<10}{','.join(map(str, chosen)):<9}{seed:>5}{np.nanmean(base_dice[chosen]):>11.3f}"
                    f"{before:>15.3f}{after:>8.3f}{after - before:>+8.3f}{time.perf_counter() - t0:>6.0f}"
                )
                print(out[-1], flush=True)
    ranked = float(np.mean(gains["ranked"]))
    random_gain = [float(np.mean(v)) for k, v in gains.items() if k != "ranked"]
    verdict = "more" if ranked > np.mean(random_gain) else "not more"
    out.append(
        f"ranked gain {ranked:+.4f} vs random gain {np.mean(random_gain):+.4f} (mean of {args.draws} draws: "
        + ", ".join(f"{g:+.4f}" for g in random_gain)
        + f"): the ranked B-scans teach the model {verdict} than random ones here"
    )
    print(out[-1])
    write_report(args.out, out, echo=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
