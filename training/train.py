"""Train an Enhanced SegNet on Duke DME with a subject-wise split (the paper's protocol).

Examples
--------
The bundled default model (about 70 minutes on a 2-core CPU)::

    python training/train.py --config training/configs/default.json --out runs/default

The paper-size network (a GPU is advised), or 4-fold cross-validation by subject::

    python training/train.py --config training/configs/paper.json --out runs/paper
    python training/train.py --config training/configs/default.json --kfold 4 --out runs/kfold

Under torchrun (DistributedDataParallel; only rank 0 writes)::

    torchrun --nproc_per_node 2 training/train.py --config training/configs/paper.json --out runs/ddp

Each run folder gets ``best.pt`` (best validation loss, rewritten atomically whenever it improves),
``log.csv`` (one row per epoch) and ``run.json`` (the resolved configuration and the final result).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from napari_octseg.core.atomic import atomic_write_text
from napari_octseg.core.classes import CLASS_NAMES
from napari_octseg.learning import FitConfig, SegDataset, class_weights_from_labels, fit, format_table, load_duke_npz
from napari_octseg.learning.augment import AugmentConfig
from napari_octseg.learning.datasets import duke_files
from napari_octseg.models import DEFAULT_NORMALIZATION, SegNet, SegNetConfig
from napari_octseg.models.checkpoint import LoadedModel, load_checkpoint

#: Pixel spacing of the Duke DME B-scans (Chiu et al. 2015): axial 3.87 µm, lateral 11.07-11.59 µm.
DUKE_PIXEL_SPACING_UM = (3.87, 11.3)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "duke_dme"
FIT_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "dice_weight",
    "lr_patience",
    "lr_factor",
    "min_lr",
    "early_stop_patience",
    "freeze_encoder_epochs",
    "seed",
    "max_steps_per_epoch",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="JSON config (training/configs/*.json); flags override it")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of Duke Subject_NN.npz files")
    p.add_argument("--out", type=Path, required=True, help="run folder (best.pt, log.csv, run.json)")
    p.add_argument("--widths", type=int, nargs="+")
    p.add_argument("--train-subjects", type=int, nargs="+")
    p.add_argument("--val-subjects", type=int, nargs="+")
    p.add_argument("--kfold", type=int, help="K-fold cross-validation by subject over train+val subjects")
    p.add_argument("--fold", type=int, help="with --kfold: run only this fold (0-based)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--repeats", type=int, help="random crops per B-scan per epoch")
    p.add_argument("--class-weights", choices=("auto", "none"))
    p.add_argument("--augment", choices=("default", "device"), help="augmentation recipe (device: device-spanning)")
    p.add_argument("--init", help="start from this checkpoint's weights (warm start)")
    p.add_argument(
        "--pixel-spacing",
        type=float,
        nargs=2,
        metavar=("AXIAL_UM", "LATERAL_UM"),
        help="pixel spacing of the training B-scans, recorded in the checkpoint (default Duke: 3.87 11.3)",
    )
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this wall time")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="reuse an existing run folder")
    for key in FIT_KEYS:
        p.add_argument(
            "--" + key.replace("_", "-"),
            type=float if key in ("lr", "weight_decay", "dice_weight", "lr_factor", "min_lr") else int,
        )
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    cfg: dict = {
        "widths": [12, 24, 48, 96, 96],
        "train_subjects": [1, 2, 3, 4, 5, 6],
        "val_subjects": [7, 8],
        "crop": [256, 256],
        "repeats": 2,
        "class_weights": "auto",
        "max_minutes": None,
        "augment": "default",
        "init": None,
        "pixel_spacing": list(DUKE_PIXEL_SPACING_UM),
    }
    if args.config:
        cfg.update({k: v for k, v in json.loads(args.config.read_text()).items() if not k.startswith("_")})
    for key, value in vars(args).items():
        if value is not None and key not in ("config", "out", "data", "force", "kfold", "fold", "threads", "device"):
            cfg[key] = list(value) if isinstance(value, (list, tuple)) else value
    return cfg


def fit_config(cfg: dict, weights) -> FitConfig:
    kwargs = {k: cfg[k] for k in FIT_KEYS if k in cfg and cfg[k] is not None}
    max_s = cfg.get("max_minutes")
    return FitConfig(**kwargs, class_weights=weights, max_seconds=max_s * 60 if max_s else None)


def run_split(cfg: dict, data: Path, out: Path, train_subjects, val_subjects, device: str, command: str) -> dict:
    rank = int(os.environ.get("RANK", 0))
    tr_img, tr_lab, _ = load_duke_npz(duke_files(data, train_subjects))
    va_img, va_lab, _ = load_duke_npz(duke_files(data, val_subjects))
    weights = class_weights_from_labels(tr_lab).tolist() if cfg["class_weights"] == "auto" else None
    augment = AugmentConfig.device_spanning() if cfg["augment"] == "device" else AugmentConfig()
    train_ds = SegDataset(tr_img, tr_lab, augment=augment, crop=tuple(cfg["crop"]), repeats=cfg["repeats"])
    val_ds = SegDataset(va_img, va_lab)
    normalization = {**DEFAULT_NORMALIZATION, "pixel_spacing_um": [float(v) for v in cfg["pixel_spacing"]]}
    if cfg["init"]:
        model = load_checkpoint(cfg["init"])
        if list(model.config.widths) != list(cfg["widths"]):
            raise SystemExit(f"--init {cfg['init']}: widths {list(model.config.widths)} differ from {cfg['widths']}")
        model.normalization = normalization
        model.model.train()
    else:
        model = LoadedModel(model=SegNet(SegNetConfig(widths=tuple(cfg["widths"]))), normalization=normalization)
    config = fit_config(cfg, weights)
    info = {
        "data": f"Duke DME (Chiu et al., Biomed. Opt. Express 6(4):1172, 2015), {data.name}/Subject_NN.npz, "
        "grader-1 labels, 11 B-scans per subject",
        "split": {
            "train_subjects": list(train_subjects),
            "val_subjects": list(val_subjects),
            "train_bscans": len(tr_img),
            "val_bscans": len(va_img),
        },
        "command": command,
        "recipe": {k: cfg[k] for k in ("widths", "crop", "repeats", "class_weights", "augment", "pixel_spacing")},
        "normalization": normalization,
        "init": cfg["init"],
    }
    if rank == 0:
        print(
            f"model {cfg['widths']}: {model.model.n_parameters():,} parameters; train {len(tr_img)} B-scans "
            f"(subjects {train_subjects}), val {len(va_img)} (subjects {val_subjects})",
            flush=True,
        )
        print(f"class weights: {weights}", flush=True)
    gen = fit(
        model,
        train_ds,
        val_ds,
        config,
        checkpoint_path=out / "best.pt",
        csv_log_path=out / "log.csv",
        checkpoint_info=info,
        device=device,
    )
    t0 = time.perf_counter()
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if rank == 0 and ev.kind == "epoch":
            m = ev.val_metrics or {}
            print(
                f"epoch {ev.epoch:3d}/{ev.n_epochs} train {ev.train_loss:.4f} val {ev.val_loss:.4f} "
                f"dice(1-7,9) {m.get('mean_dice_scored', float('nan')):.4f} lr {ev.lr:.1e} "
                f"{'*' if ev.best else ' '} {ev.seconds / 60:.1f} min",
                flush=True,
            )
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    summary = {
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped_reason": result.stopped_reason,
        "epochs_run": len(result.history),
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "best_row": best,
    }
    if rank == 0:
        from torch.utils.data import DataLoader

        from napari_octseg.learning.datasets import pad_collate
        from napari_octseg.learning.engine import _validate  # reuse the exact validation pass
        from napari_octseg.learning.losses import HybridLoss

        loader = DataLoader(val_ds, batch_size=1, collate_fn=pad_collate)
        _, metrics = _validate(result.model.cpu(), loader, HybridLoss(10), 10, torch.device("cpu"), 1, False)
        print(f"stopped: {result.stopped_reason}; best epoch {result.best_epoch}", flush=True)
        print(format_table(metrics, CLASS_NAMES), flush=True)
        summary["val_mean_dice_scored"] = metrics["mean_dice_scored"]
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args)
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        print(f"{args.out}: exists and is not empty (use --force)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    results = []
    if args.kfold:
        subjects = sorted(set(cfg["train_subjects"]) | set(cfg["val_subjects"]))
        folds = [subjects[i :: args.kfold] for i in range(args.kfold)]
        for i, val in enumerate(folds):
            if args.fold is not None and i != args.fold:
                continue
            train = [s for s in subjects if s not in val]
            results.append(
                {"fold": i, **run_split(cfg, args.data, args.out / f"fold{i}", train, val, args.device, command)}
            )
    else:
        results.append(
            run_split(cfg, args.data, args.out, cfg["train_subjects"], cfg["val_subjects"], args.device, command)
        )
    if int(os.environ.get("RANK", 0)) == 0:
        atomic_write_text(
            args.out / "run.json",
            json.dumps({"config": cfg, "command": command, "results": results}, indent=2, default=float),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
