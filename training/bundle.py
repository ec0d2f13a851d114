"""Turn a finished training run into the bundled default model and its model card.

::

    python training/bundle.py runs/default --name octseg_default

Reads ``RUN/best.pt``, ``RUN/run.json`` and ``RUN/log.csv``; scores the model on the run's validation
subjects (whole B-scans through ``inference.segment``), measures B-scans/s at 496 x 512 on 2 CPU
threads, and writes, atomically:

- ``src/napari_octseg/models/weights/<name>.pt``: the checkpoint, its ``training`` record completed
  with the wall time, epochs run, stop reason and the per-class validation table;
- ``src/napari_octseg/models/weights/<name>.md``: the model card;
- ``training/results/<name>_val_per_class.csv`` and ``training/results/<name>_curves.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from napari_octseg.core.atomic import atomic_write_text
from napari_octseg.learning import format_table, score_rows
from napari_octseg.models import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "napari_octseg" / "models" / "weights"
RESULTS = ROOT / "training" / "results"


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("training_evaluate", Path(__file__).with_name("evaluate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="training run folder (best.pt, run.json, log.csv)")
    p.add_argument("--name", default="octseg_default")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "duke_dme")
    p.add_argument("--append", type=Path, nargs="*", default=[], help="markdown files appended to the model card")
    args = p.parse_args(argv)
    ev_mod = _evaluate_module()
    run = json.loads((args.run / "run.json").read_text())
    result = run["results"][0]
    loaded = load_checkpoint(args.run / "best.pt")
    record = dict(loaded.training)
    val_subjects = record["split"]["val_subjects"]
    ev = ev_mod.evaluate(str(args.run / "best.pt"), args.data, val_subjects)
    speed = ev_mod.measure_speed(str(args.run / "best.pt"), threads=2)
    load = os.getloadavg()[0]
    pooled = ev["pooled"]
    record.update(
        {
            "wall_time_minutes": result["minutes"],
            "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"],
            "stopped_reason": result["stopped_reason"],
            "val_per_class": [
                {k: r[k] for k in ("class", "name", "accuracy", "dice", "iou")}
                for r in score_rows(pooled, ev["class_names"])
            ],
            "val_mean_dice_scored": pooled["mean_dice_scored"],
            "cpu_bscans_per_second_496x512_2threads": round(speed, 2),
            "cpu_load_average_during_speed_test": round(load, 2),
        }
    )
    out_pt = WEIGHTS / f"{args.name}.pt"
    save_checkpoint(
        out_pt, loaded.model, class_names=loaded.class_names, normalization=loaded.normalization, training=record
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    ev_mod.write_csv(RESULTS / f"{args.name}_val_per_class.csv", ev)
    ev_mod.plot_curves(args.run / "log.csv", RESULTS / f"{args.name}_curves.png")
    card = model_card(args.name, record, ev, speed, load, loaded)
    for extra in args.append:
        card += "\n" + extra.read_text(encoding="utf-8")
    atomic_write_text(WEIGHTS / f"{args.name}.md", card)
    print(format_table(pooled, ev["class_names"]))
    print(f"speed {speed:.2f} B-scans/s; wrote {out_pt} ({out_pt.stat().st_size / 1e6:.1f} MB) and its card")
    return 0


def model_card(name: str, rec: dict, ev: dict, speed: float, load: float, loaded) -> str:
    pooled = ev["pooled"]
    per_subject = "\n".join(
        f"| {s} | {r['mean_dice_scored']:.3f} | {r['mean_dice_layers']:.3f} | {r['dice'][9]:.3f} |"
        for s, r in ev["per_subject"].items()
    )
    layers_ok = all(pooled["dice"][c] >= 0.80 for c in range(1, 8))
    target = "met" if pooled["mean_dice_scored"] >= 0.85 and layers_ok else "NOT met"
    hw = rec.get("hardware", {})
    fc = rec.get("fit_config", {})
    spacing = " x ".join(f"{v:g}" for v in loaded.normalization.get("pixel_spacing_um", [])) or "the training images'"
    augment = (
        "; and other devices (`AugmentConfig.device_spanning`): coarser axial/lateral sampling (1.9-5.6 µm, "
        "5-30 µm), single-frame speckle to heavy averaging, stronger blur and gamma, histogram equalisation, "
        "tilt and curvature, vessel shadows"
        if rec["recipe"].get("augment") == "device"
        else ""
    )
    weights = (
        "no class weights (weights biased every boundary toward the up-weighted class)"
        if rec["recipe"].get("class_weights") == "none"
        else "median-frequency class weights (power 0.5)"
    )
    return f"""# {name}: bundled default model of napari-octseg

Enhanced SegNet (encoder with pooling indices, unpooling decoder with full-resolution skips),
widths {list(loaded.config.widths)}, {loaded.model.n_parameters():,} parameters, 10 classes
({", ".join(loaded.class_names)}). Input: one B-scan, display grey values normalised per B-scan
({loaded.normalization}).

## Data
Duke DME: S. J. Chiu, M. J. Allingham, P. S. Mettu, S. W. Cousins, J. A. Izatt, S. Farsiu, "Kernel
regression based segmentation of optical coherence tomography images with diabetic macular edema",
Biomed. Opt. Express 6(4):1172-1194 (2015). 11 manually annotated B-scans per subject (grader 1),
Heidelberg Spectralis, 496 rows x 500-548 columns. Research use; the data is not redistributed here.

## Split
Subject-wise: trained on Subject_01-06 ({rec["split"]["train_bscans"]} B-scans), validated (model
selection: best validation loss) on Subject_07-08 ({rec["split"]["val_bscans"]} B-scans). The model
never saw Subject_07-08 gradients; they did choose the checkpoint and the recipe, so they are a
validation set, not an untouched test set (Subjects 09-10 are scored outside the project).

## Training
- Command: `{rec["command"]}`
- Starts from: `{rec.get("init") or "random initialisation"}` (see `training/README.md` for the chain of runs).
- Input grid: B-scans at {spacing} µm per pixel (axial x lateral); `inference.segment` resamples every
  B-scan to it from the image's own scale and maps the labels back.
- Recipe: random {rec["recipe"]["crop"][0]}x{rec["recipe"]["crop"][1]} crops ({rec["recipe"]["repeats"]} per
  B-scan per epoch, 80 % placed on retina), flips, small rotation/shear/scale, gamma/contrast jitter,
  speckle noise, blur{augment}; loss CE + {fc.get("dice_weight")} x (1 - soft Dice), {weights};
  Adam lr {fc.get("lr")}, batch {fc.get("batch_size")}, weight decay
  {fc.get("weight_decay")}, ReduceLROnPlateau (factor {fc.get("lr_factor")}, patience {fc.get("lr_patience")}),
  early stopping patience {fc.get("early_stop_patience")}, time limit {fc.get("max_seconds")} s.
- Epochs: {rec["epochs_run"]} run, best epoch {rec["best_epoch"]} (stopped: {rec["stopped_reason"]}).
- Hardware: {hw.get("device")} ({hw.get("processor")}, {hw.get("cpu_count")} cores shared with other
  jobs, {hw.get("torch_threads")} torch threads), torch {hw.get("torch")}.
- Wall time: {rec["wall_time_minutes"]} minutes.

## Validation on Subject_07-08 (whole B-scans, pixels pooled over the 22 B-scans)
Target: mean Dice over classes 1-7 and 9 >= 0.85 with every layer >= 0.80: **{target}**.

```
{format_table(pooled, ev["class_names"])}
```

| subject | mean Dice 1-7 + fluid | mean Dice layers 1-7 | fluid Dice |
|---|---|---|---|
{per_subject}

Per-class CSV: `training/results/{name}_val_per_class.csv`; curves: `training/results/{name}_curves.png`.
Reproduce: `python training/evaluate.py --model src/napari_octseg/models/weights/{name}.pt --subjects 7 8`.

## Speed
{speed:.2f} B-scans/s for 496 x 512 B-scans on this 2-core CPU (torch.inference_mode, 2 threads,
through `napari_octseg.inference.segment`, batch 1), measured at a 1-minute load average of {load:.1f}
on the 2 cores: other jobs shared the machine, so this is a lower bound. `benchmarks/bench_model_widths.py`
measures the bare network on an idle machine.

## Explanations
Grad-CAM heatmaps (`octseg gradcam`, the Explain dock) show where the features that raised a class's score
respond at a chosen layer; they are not a record of "what the network looked at". At the paper's layers
(`decoder`, `final`) a heatmap is a rescaled class-score map, the same for every question; at the coarser
layers a region's map keeps much of its class's pattern (the question reweights the channels, not where
they respond). Whether this model's maps are faithful at each layer (deletion curves against random order
and the score map), depend on its weights (model randomisation), change with the question (region vs whole
B-scan) and what they cost is measured by `python benchmarks/bench_gradcam.py --model <this checkpoint>`;
none of it is measured when bundling.

## Limitations
- Trained on 66 B-scans of 6 DME patients from one device (Spectralis); other scanners, pathologies
  (AMD, glaucoma, high myopia) and image qualities are out of distribution: check the result and
  fine-tune on a few corrected B-scans (`octseg finetune`, or the napari widget).
- Subject_07-08 hold little fluid (0.3-0.4 % of pixels), so the fluid Dice rests on few pixels and
  is the least reliable figure; small fluid pockets are often missed or under-segmented.
- Trained briefly on a CPU; the paper-size network (`training/configs/paper.json`) on a GPU should do better.
- Labels are the Duke grader-1 annotation; inter-grader variability on this set is of the same order
  as the thin-layer errors.

## Terms of use
Trained on the Duke DME data set, which is made available for research use: these weights are for
RESEARCH USE ONLY, not for clinical diagnosis. If you use them, cite Chiu et al., Biomed. Opt. Express
6(4):1172-1194 (2015) (see Data above). The package's code is BSD-3-Clause (LICENSE); NOTICE at the
repository root repeats these terms.
"""


if __name__ == "__main__":
    sys.exit(main())
