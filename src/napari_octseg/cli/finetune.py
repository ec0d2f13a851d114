"""``octseg finetune``: learn from corrected B-scans and write a new checkpoint.

Which B-scans are learned from: ``--bscans`` when given; otherwise, with ``--auto FILE`` (the automatic
segmentation the corrections started from), the B-scans whose labels differ from it; otherwise every
B-scan whose labels are not all 0 (a label volume in which only some B-scans were annotated leaves the
others at 0, and those are skipped).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from ..core.errors import InputError
from ._common import add_scale_options, with_scale_and_reflectivity

HELP = "fine-tune a model on corrected B-scans and write a new checkpoint"


def register(subparsers: Any) -> None:
    from ..learning.finetune import (
        DEFAULT_EPOCHS,
        DEFAULT_FREEZE_ENCODER_EPOCHS,
        DEFAULT_LR,
        DEFAULT_SELF_REPLAY_BSCANS,
    )

    p = subparsers.add_parser(
        "finetune",
        help=HELP,
        description=HELP + ". " + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").replace("``", "").strip(),
    )
    p.add_argument("--images", required=True, metavar="FILE", help="the OCT volume (any format octseg reads)")
    add_scale_options(p)
    p.add_argument(
        "--labels", required=True, metavar="FILE", help="corrected label volume of the image's shape (TIFF or .npy)"
    )
    p.add_argument("--bscans", metavar="LIST", help="B-scans to learn from, 0-based, e.g. 0,5,9 or 3-6")
    p.add_argument(
        "--auto", metavar="FILE", help="automatic labels the corrections started from (selects changed B-scans)"
    )
    p.add_argument(
        "--base", metavar="MODEL", default=None, help="base model: bundled name or checkpoint (default: bundled)"
    )
    p.add_argument("--out", required=True, metavar="NEW.pt", help="the new checkpoint to write")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate (default {DEFAULT_LR:g})")
    p.add_argument(
        "--freeze-encoder-epochs",
        type=int,
        default=DEFAULT_FREEZE_ENCODER_EPOCHS,
        help=f"epochs with the encoder frozen at the start (default {DEFAULT_FREEZE_ENCODER_EPOCHS})",
    )
    p.add_argument(
        "--replay", nargs="+", metavar="NPZ", help="replay B-scans (npz with images, labels) against forgetting"
    )
    p.add_argument(
        "--self-replay",
        type=int,
        default=DEFAULT_SELF_REPLAY_BSCANS,
        metavar="N",
        help=f"replay up to N uncorrected B-scans labelled by the base model (default {DEFAULT_SELF_REPLAY_BSCANS}; 0: off)",
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def select_bscans(labels: np.ndarray, bscans: str | None, auto: np.ndarray | None) -> list[int]:
    """The B-scans to learn from, by the rule in this module's docstring.

    Raises
    ------
    InputError
        If the rule selects nothing.
    """
    from ..learning.finetune import changed_bscans, parse_bscans

    n = labels.shape[0]
    if bscans is not None:
        chosen = parse_bscans(bscans, n)
        how = "--bscans"
    elif auto is not None:
        chosen = changed_bscans(labels, auto)
        how = "differences from --auto"
    else:
        chosen = [int(i) for i in np.flatnonzero(labels.reshape(n, -1).any(axis=1))]
        how = "B-scans with labels"
    if not chosen:
        raise InputError(f"no B-scans to learn from (selected by {how})")
    return chosen


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import io
    from ..learning.finetune import FinetuneOptions, check_out_path, finetune, format_bscans, load_replay
    from ..models.device import select_device
    from ..models.registry import load_model

    if args.epochs < 1:
        raise InputError("--epochs must be at least 1")
    if not args.lr > 0:
        raise InputError("--lr must be positive")
    if args.self_replay < 0:
        raise InputError("--self-replay must be 0 or more")
    device = select_device(args.device)
    base = load_model(args.base, device="cpu")
    out = check_out_path(args.out, base, overwrite=args.force)
    volume = io.read(args.images)
    volume = with_scale_and_reflectivity(volume, args)
    labels = io.read_labels(args.labels, shape=volume.shape)
    auto = io.read_labels(args.auto, shape=volume.shape) if args.auto else None
    bscans = select_bscans(labels, args.bscans, auto)
    replay = load_replay(args.replay) if args.replay else None
    gen = finetune(
        volume,
        labels,
        bscans,
        base,
        epochs=args.epochs,
        lr=args.lr,
        out_path=out,
        replay=replay,
        freeze_encoder_epochs=args.freeze_encoder_epochs,
        device=device,
        overwrite=args.force,
        options=FinetuneOptions(seed=args.seed, self_replay_bscans=args.self_replay),
        data_source={"images": str(args.images), "labels": str(args.labels)},
    )
    print(f"fine-tuning {base.source} on B-scans {format_bscans(bscans)} of {args.images}", file=sys.stderr)
    bar = tqdm(desc="fine-tuning", unit="step", disable=args.quiet, leave=False)
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if event.kind == "step":
                bar.total = event.n_epochs * event.n_steps
                bar.n = (event.epoch - 1) * event.n_steps + event.step
                bar.set_postfix_str(f"epoch {event.epoch}/{event.n_epochs} loss {event.train_loss:.4f}", refresh=False)
                bar.refresh()
    finally:
        bar.close()
    if result.checkpoint_path is None:
        raise InputError(result.message or "fine-tuning did not produce a model; nothing was written")
    print(result.message)
    return 0
