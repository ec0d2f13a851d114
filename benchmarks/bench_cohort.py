"""Cohort runs of ``octseg segment``: one process vs ``torchrun`` vs two ``--shard`` processes, and kill + resume.

On N small synthetic volumes (default 200 of 2 x 64 x 64; ``--model tiny``: a random-weight SegNet of widths
(4, 8, 8), which measures the batch machinery rather than the network, or ``--model bundled``; CPU, one thread
per process):

1. one process: ``octseg segment in/*.npy --out A``;
2. ``torchrun --standalone --nproc_per_node 2 -m napari_octseg segment in/*.npy --out B`` (each rank takes
   its share from RANK / WORLD_SIZE; no process group is created);
3. two processes ``--shard 0/2`` and ``--shard 1/2`` started together (what a SLURM array task runs);
4. two shard processes again, shard 0 killed with SIGKILL part-way, then the same shard-0 command re-run:
   every file must then be segmented exactly once, no temporary or partial output left, every output up to
   date, and the manifest complete (one done row per file, every line valid JSON).

Wall time counts each command from start to exit (Python start-up, imports and model loading included);
files/s = N / wall. The labels of runs 2-4 are compared with run 1 (CPU, one thread: identical).

Usage::

    python benchmarks/bench_cohort.py                      # 200 volumes, tiny model, results/cohort.txt
    python benchmarks/bench_cohort.py --model bundled --n 40 --out /tmp/c.txt
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_octseg.batch import MANIFEST_NAME, fingerprint, output_state, read_manifest  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
OCTSEG = [sys.executable, "-m", "napari_octseg", "segment"]


def make_inputs(folder: Path, n: int, shape: tuple[int, int, int]) -> list[Path]:
    from napari_octseg.synthetic import make_volume

    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        vol = make_volume(n_bscans=shape[0], height=shape[1], width=shape[2], seed=i)
        path = folder / f"subject_{i:04d}.npy"
        np.save(path, vol.data)
        paths.append(path)
    return paths


def timed(commands: list[list[str]]) -> float:
    """Start the commands together, wait for all; wall seconds (raises if one fails)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{p.args[:6]}... exited {p.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def labels_of(out: Path) -> dict[str, np.ndarray]:
    import tifffile

    return {p.name: tifffile.imread(p) for p in sorted(out.glob("*.labels.tif"))}


def check_folder(out: Path, inputs: list[Path], reference: dict[str, np.ndarray] | None, model_spec) -> dict:
    """Outputs complete, current and equal to the reference; manifest rows per file."""
    from napari_octseg.cli._common import model_identity

    model = model_identity(model_spec)
    lines = (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()
    rows = read_manifest(out / MANIFEST_NAME)
    done: dict[str, int] = {}
    last: dict[str, str] = {}
    for r in rows:
        if r["status"] == "done":
            done[r["file"]] = done.get(r["file"], 0) + 1
        last[r["file"]] = r["status"]
    states = [
        output_state(
            [out / f"{p.stem}.labels.tif"], out / f"{p.stem}.labels.json", fingerprint("segment", model, {}, p)
        ).status
        for p in inputs
    ]
    got = labels_of(out)
    same = None  # no 1-process run to compare with
    if reference is not None:
        same = got.keys() == reference.keys() and all((got[k] == reference[k]).all() for k in got)
    return {
        "outputs_current": sum(s == "current" for s in states),
        "temporaries_left": len(list(out.glob(".*.tmp"))),
        "manifest_lines": len(lines),
        "manifest_invalid_lines": len(lines) - len(rows),
        "files_done_once": sum(done.get(str(p), 0) == 1 for p in inputs),
        "files_done_twice_or_more": sum(done.get(str(p), 0) > 1 for p in inputs),
        "files_ending_done_or_skipped": sum(last.get(str(p)) in ("done", "skipped") for p in inputs),
        "labels_equal_to_one_process_run": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of volumes (default 200)")
    ap.add_argument("--shape", default="2,64,64", help="B-scans,depth,width of each volume (default 2,64,64)")
    ap.add_argument("--model", choices=("tiny", "bundled"), default="tiny", help="network (default tiny)")
    ap.add_argument("--kill-after", type=float, default=0.4, help="kill shard 0 after this fraction of its files")
    ap.add_argument(
        "--runs", default="one,torchrun,shards,kill", help="which runs, comma-separated (default: all four)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cohort.txt")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    work = Path(tempfile.mkdtemp(prefix="octseg-cohort-"))
    inputs = make_inputs(work / "in", args.n, shape)  # type: ignore[arg-type]
    names = [str(p) for p in inputs]
    results: list[dict] = []

    def write(rows: list[dict]) -> None:
        import torch

        header = [
            "# bench_cohort.py: octseg segment over a cohort of synthetic volumes",
            f"# {args.n} volumes of {shape[0]} x {shape[1]} x {shape[2]} (B-scans x depth x width), {args.model} model,"
            f" CPU, OMP_NUM_THREADS=1 per process; {os.cpu_count()} CPU cores (shared machine: see load_avg);"
            f" torch {torch.__version__}; python {sys.version.split()[0]}",
            "# wall_s: from start to exit of the command(s), start-up and model loading included; files/s = n / wall",
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(header + [json.dumps(x) for x in rows]) + "\n", encoding="utf-8")

    model_spec = None
    if args.model == "tiny":
        import torch

        from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint

        torch.manual_seed(0)
        model_spec = str(save_checkpoint(work / "tiny.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval()))
    model_args = ["--model", model_spec] if model_spec else []
    names = names + model_args  # every command below takes the inputs, then the model

    def row(label: str, command: str, wall: float, folder: Path, reference) -> dict:
        checks = check_folder(folder, inputs, reference, model_spec)
        r = {"run": label, "command": command, "wall_s": round(wall, 2), "files_per_s": round(args.n / wall, 2)}
        r.update(checks)
        r["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
        results.append(r)
        print(json.dumps(r), flush=True)
        write(results)
        return r

    runs = set(args.runs.split(","))
    reference = None
    if "one" in runs:
        one = work / "one"
        wall = timed([[*OCTSEG, *names, "--out", str(one), "--quiet", "--device", "cpu"]])
        reference = labels_of(one)
        row("1 process", "octseg segment in/*.npy --out one --device cpu", wall, one, None)
    if "torchrun" in runs:
        run_torchrun(work, names, row, reference)
    if "shards" in runs:
        run_shards(work, names, row, reference)
    if "kill" in runs:
        run_kill(work, names, row, reference, args)
    write(results)


def run_torchrun(work: Path, names: list[str], row, reference) -> None:
    tr = work / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    wall = timed([[*torchrun, "-m", "napari_octseg", "segment", *names, "--out", str(tr), "--quiet"]])
    row("torchrun 2 ranks", "torchrun --standalone --nproc_per_node 2 -m napari_octseg segment in/*.npy --out tr", wall,
        tr, reference)  # fmt: skip


def run_shards(work: Path, names: list[str], row, reference) -> None:
    sh = work / "shards"
    cmds = [[*OCTSEG, *names, "--out", str(sh), "--quiet", "--device", "cpu", "--shard", f"{k}/2"] for k in range(2)]
    wall = timed(cmds)
    row(
        "2 --shard processes",
        "octseg segment in/*.npy --out shards --shard K/2 (K = 0, 1 at once)",
        wall,
        sh,
        reference,
    )


def run_kill(work: Path, names: list[str], row, reference, args) -> None:
    """Kill shard 0 part-way with SIGKILL, let shard 1 finish, re-run shard 0's command."""
    kl = work / "killed"
    cmds = [[*OCTSEG, *names, "--out", str(kl), "--quiet", "--device", "cpu", "--shard", f"{k}/2"] for k in range(2)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in cmds]
    target = int(args.kill_after * args.n / 2)
    killed_after = 0
    while procs[0].poll() is None:
        if (kl / MANIFEST_NAME).exists():
            killed_after = sum(
                r.get("shard") == "0/2" and r["status"] == "done" for r in read_manifest(kl / MANIFEST_NAME)
            )
            if killed_after >= target:
                procs[0].send_signal(signal.SIGKILL)
                break
        time.sleep(0.2)
    procs[0].wait()
    procs[1].wait()
    temporaries_at_kill = len(list(kl.glob(".*.tmp")))
    wall_resume = timed([cmds[0]])
    total = time.perf_counter() - t0
    shard0 = [r for r in read_manifest(kl / MANIFEST_NAME) if r.get("shard") == "0/2"]
    before = [x for x in shard0 if x["pid"] == procs[0].pid]
    resumed = [x for x in shard0 if x["pid"] != procs[0].pid]
    r = row("SIGKILL shard 0, re-run it", "same as above; kill -9 shard 0; re-run shard 0", total, kl, reference)
    r.update(
        {
            "shard0_done_before_kill": sum(x["status"] == "done" for x in before),
            "shard0_exit_code": procs[0].returncode,
            "temporaries_right_after_kill": temporaries_at_kill,
            "rerun_wall_s": round(wall_resume, 2),
            "rerun_skipped": sum(x["status"] == "skipped" for x in resumed),
            "rerun_done": sum(x["status"] == "done" for x in resumed),
        }
    )
    print(json.dumps(r), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
