"""Segmentation speed and memory: B-scans/s, peak RSS, and the fraction of matmul speed achieved.

For the default (bundled, else the light preset) and the paper-size network, on a synthetic
49 x 496 x 512 volume, on the CPU and on CUDA when present; optionally (``--big``) the peak RSS of a
128 x 1024 x 512 (Cirrus-cube-sized) volume with the default network.

Every measurement runs in its own subprocess, so peak RSS (``ru_maxrss``) is that run's alone. Each
subprocess also times a float32 ``torch.matmul`` (fp16/bf16 on CUDA, as autocast runs the network)
just before segmenting, so the achieved fraction compares like with like on a machine whose load
varies. Model FLOPs per B-scan are counted from the conv layers (2 x MACs, at the padded size the
network really computes).

Usage::

    python benchmarks/bench_segment.py                 # default + paper on CPU (+ CUDA when present)
    python benchmarks/bench_segment.py --big           # ... and the 128 x 1024 x 512 peak-RSS run
    python benchmarks/bench_segment.py --cpu-paper-bscans 49   # the paper network on all 49 B-scans
    python benchmarks/bench_segment.py --presets default --data duke   # real B-scans (the retina window)
    python benchmarks/bench_segment.py --presets default --data duke-eye --subject 7   # one eye's B-scans
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GB = 1024**3


DUKE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "duke_dme"


def _duke_volume(n: int, w: int, path: Path) -> dict:
    """Save the first ``n`` of the 88 Duke B-scans (Subject_01 on; edge-padded or centre-cropped to ``w``)."""
    bscans = []
    for f in sorted(DUKE.glob("Subject_*.npz")):
        with np.load(f, allow_pickle=False) as z:
            for img in z["images"]:
                pad = max(0, w - img.shape[1])
                img = np.pad(img, ((0, 0), (pad // 2, pad - pad // 2)), mode="edge")
                start = (img.shape[1] - w) // 2
                bscans.append(img[:, start : start + w])
    if len(bscans) < n:
        raise SystemExit(f"needs {n} Duke B-scans in {DUKE}; found {len(bscans)}")
    np.save(path, np.stack(bscans[:n]))
    return {"source": f"Duke DME B-scans 1-{n} (Subject_01 on, 11 per subject)", "reflectivity": "display"}


def _duke_eye_volume(n: int, w: int, path: Path, subject: int) -> dict:
    """Save ``n`` B-scans of one eye: Duke Subject ``subject``'s 11 B-scans in order, repeated (edge-padded
    or centre-cropped to ``w``). A real volume is one eye, whose B-scans keep the retina at about the same
    rows; the stacked ``duke`` volume jumps from one eye to the next every 11 B-scans."""
    with np.load(DUKE / f"Subject_{subject:02d}.npz", allow_pickle=False) as z:
        images = z["images"]
    pad = max(0, w - images.shape[2])
    images = np.pad(images, ((0, 0), (0, 0), (pad // 2, pad - pad // 2)), mode="edge")
    start = (images.shape[2] - w) // 2
    images = images[:, :, start : start + w]
    np.save(path, np.concatenate([images] * -(-n // len(images)))[:n])
    return {
        "source": f"Duke DME Subject_{subject:02d}'s 11 B-scans in order, repeated to {n}",
        "reflectivity": "display",
    }


def _make_volume(n: int, h: int, w: int, path: Path) -> dict:
    """Save a synthetic (else random) volume's data as .npy; return its description."""
    try:
        from napari_octseg.synthetic import make_volume

        vol = make_volume(n_bscans=n, height=h, width=w, seed=0)
        np.save(path, vol.data)
        return {"source": "synthetic", "reflectivity": vol.reflectivity}
    except ImportError:
        rng = np.random.default_rng(0)
        np.save(path, rng.random((n, h, w), dtype=np.float32))
        return {"source": "random", "reflectivity": "display"}


def _matmul_gflops(device: str, size: int = 2048, repeats: int = 5) -> tuple[float, str]:
    import torch

    dtype = torch.float32
    if device == "cuda":
        size = 8192
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    a = torch.rand(size, size, device=device, dtype=dtype)
    b = torch.rand(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9, str(dtype).replace("torch.", "")


def _conv_gflops_per_bscan(net, h: int, w: int) -> float:
    """2 x multiply-adds of every Conv2d for one (1, 1, h, w) B-scan, in GFLOP."""
    import torch
    from torch import nn

    total = 0

    def hook(module: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        macs = (module.in_channels // module.groups) * kh * kw * out.shape[1] * out.shape[2] * out.shape[3]
        total += 2 * macs

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 1, h, w, device=next(net.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return total / 1e9


def child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process; prints one JSON line."""
    import resource

    import psutil
    import torch

    from napari_octseg.core.progress import run_generator
    from napari_octseg.core.volume import OctVolume
    from napari_octseg.inference import segment
    from napari_octseg.models import PRESETS, LoadedModel, SegNet
    from napari_octseg.models.registry import bundled_path, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset == "default" and args.default_model:
        loaded, model_name = load_model(args.default_model), Path(args.default_model).name
    elif args.preset == "default" and bundled_path().is_file():
        loaded, model_name = load_model(None), "bundled default"
    else:
        preset = "light" if args.preset == "default" else args.preset
        torch.manual_seed(0)
        loaded, model_name = LoadedModel(model=SegNet(PRESETS[preset]).eval()), f"{preset} preset (random)"
    data = np.ascontiguousarray(np.load(args.volume, mmap_mode="r")[: args.n_bscans])
    vol = OctVolume(data, reflectivity=args.reflectivity)
    n, h, w = vol.shape
    proc = psutil.Process()
    matmul, matmul_dtype = _matmul_gflops(args.device)
    run_generator(segment(vol.data[:1], loaded, device=args.device, batch_size=1))  # warm-up: one-off setup
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = proc.memory_info().rss
    t = time.perf_counter()
    window = args.window == "on"
    result = run_generator(segment(vol, loaded, device=args.device, batch_size=args.batch_size, window=window))
    seconds = time.perf_counter() - t
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    cuda_peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
    gflop = _conv_gflops_per_bscan(loaded.model.to(args.device), h, w)
    print(
        json.dumps(
            {
                "model": model_name,
                "params_m": loaded.model.n_parameters() / 1e6,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "shape": [n, h, w],
                "batch_size": result.batch_size,
                "bscans_per_s": n / seconds,
                "gflop_per_bscan": gflop,
                "matmul_gflops": matmul,
                "matmul_dtype": matmul_dtype,
                "rss_before_gb": rss_before / GB,
                "peak_rss_gb": peak_rss / GB,
                "cuda_peak_gb": cuda_peak / GB if cuda_peak is not None else None,
                "window": f"{result.window_bscans}/{result.window_reruns}" if window else "off",
            }
        )
    )


def _run_child(
    volume: Path, info: dict, preset: str, device: str, n: int, args: argparse.Namespace, window: str = "on"
) -> dict:
    cmd = [sys.executable, __file__, "--child", "--volume", str(volume), "--reflectivity", info["reflectivity"],
           "--preset", preset, "--device", device, "--n-bscans", str(n), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--window", window]  # fmt: skip
    if args.default_model:
        cmd += ["--default-model", args.default_model]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {preset}/{device} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    head = (
        f"{'model':<26} {'Mparam':>6} {'device':>6} {'thr':>3} {'volume':>14} {'batch':>5} {'B-scan/s':>8} "
        f"{'GFLOP/B':>7} {'GFLOP/s':>7} {'matmul':>7} {'frac':>5} {'RSS0 GB':>7} {'peakRSS':>7} {'CUDA GB':>7} "
        f"{'window':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        # FLOPs are counted at full height: with the window on, the network sees fewer rows, so the
        # achieved rate and fraction are given for full-height runs only
        full = r.get("window", "off") == "off"
        achieved = r["gflop_per_bscan"] * r["bscans_per_s"]
        rate = f"{achieved:>7.1f}" if full else f"{'-':>7}"
        frac = f"{achieved / r['matmul_gflops']:>5.2f}" if full else f"{'-':>5}"
        cuda = f"{r['cuda_peak_gb']:.2f}" if r["cuda_peak_gb"] is not None else "-"
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"{r['model']:<26} {r['params_m']:>6.2f} {r['device']:>6} {r['threads']:>3} {shape:>14} "
            f"{r['batch_size']:>5} {r['bscans_per_s']:>8.2f} {r['gflop_per_bscan']:>7.1f} {rate} "
            f"{r['matmul_gflops']:>7.1f} {frac} {r['rss_before_gb']:>7.2f} "
            f"{r['peak_rss_gb']:>7.2f} {cuda:>7} {r.get('window', 'off'):>7}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--volume", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--reflectivity", default="display", help=argparse.SUPPRESS)
    p.add_argument("--preset", default="default", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--presets", nargs="+", default=["default", "paper"], choices=["default", "light", "paper"])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    p.add_argument("--n-bscans", type=int, default=49)
    p.add_argument("--cpu-paper-bscans", type=int, default=6,
                   help="B-scans for the paper-size network on the CPU (~15x slower); default 6")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--default-model", default=None, metavar="PATH",
                   help="checkpoint to use as 'default' (else the bundled one, else the light preset)")  # fmt: skip
    p.add_argument("--data", choices=["synthetic", "duke", "duke-eye"], default="synthetic",
                   help="the 496 x 512 volume: synthetic, the first Duke DME B-scans in ../shared/data "
                        "(5 eyes stacked), or one Duke eye's B-scans repeated (--subject)")  # fmt: skip
    p.add_argument("--subject", type=int, default=7, help="the Duke subject of --data duke-eye")
    p.add_argument("--window", choices=["on", "off", "both"], default="both",
                   help="the retina window (segment(window=...)): on, off, or both side by side")  # fmt: skip
    p.add_argument("--big", action="store_true", help="also measure peak RSS on 128 x 1024 x 512")
    p.add_argument("--big-only", action="store_true", help="only the 128 x 1024 x 512 peak-RSS run")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    windows = ["on", "off"] if args.window == "both" else [args.window]
    rows = []
    print(f"load average at start: {os.getloadavg()}, CPUs: {os.cpu_count()}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.big_only:
            path = Path(tmp) / "vol.npy"
            if args.data == "duke":
                info = _duke_volume(args.n_bscans, 512, path)
            elif args.data == "duke-eye":
                info = _duke_eye_volume(args.n_bscans, 512, path, args.subject)
            else:
                info = _make_volume(args.n_bscans, 496, 512, path)
            for preset in args.presets:
                for device in devices:
                    n = args.cpu_paper_bscans if (preset == "paper" and device == "cpu") else args.n_bscans
                    for window in windows:
                        rows.append(_run_child(path, info, preset, device, min(n, args.n_bscans), args, window))
                        print(_table(rows[-1:]).splitlines()[-1], flush=True)
        if args.big or args.big_only:
            path = Path(tmp) / "big.npy"
            info = _make_volume(128, 1024, 512, path)
            for device in devices:
                for window in windows:
                    rows.append(_run_child(path, info, "default", device, 128, args, window))
                    print(_table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\nvolume data: {info['source']}; load average at end: {os.getloadavg()}")
    print("frac = conv GFLOP/B-scan x B-scans/s / matmul GFLOP/s (same process, just before); RSS0 = RSS before")
    print("segmenting (torch + model + volume); peakRSS = whole process, ru_maxrss; window = B-scans the network")
    print("saw on the retina window / windowed results run again at full height (off: every row), FLOPs and frac")
    print("for full-height runs only.\n")
    print(_table(rows))


if __name__ == "__main__":
    main()
