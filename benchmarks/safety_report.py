"""Safety report (issue 9): the fuzz and failure-mode families, with larger counts than the tests.

For each family it prints the cases tried, the clear outcomes (one-line error of the expected type,
or for out-of-memory a correct recovery), crashes (any other exception, garbage accepted, a pickle
payload executed, a message that is not one line), hangs (a case over 10 s) and data losses (an
input modified, a partial or temporary file left, an existing file changed without consent).

    python benchmarks/safety_report.py [--quick]

The reader cases come from benchmarks/fuzz_readers.py; tests/io/test_io_fuzz.py and tests/test_safety_*.py
run smaller samples of the same families. The families of issue 16 (hostile small files and model files,
outputs that are inputs, messages, memory estimate, SIGTERM/SIGKILL and concurrent writers) are in
benchmarks/safety_issue16.py.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import logging
import os
import pathlib
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_readers  # noqa: E402

HANG_S = 10.0


@dataclass
class Tally:
    family: str
    tried: int = 0
    clear: int = 0
    crashes: int = 0
    hangs: int = 0
    losses: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, ok: bool, seconds: float, lost: bool = False, note: str = "") -> None:
        self.tried += 1
        self.clear += ok
        self.crashes += not ok
        self.hangs += seconds > HANG_S
        self.losses += lost
        if (not ok or lost) and note and len(self.notes) < 3:
            self.notes.append(" ".join(note.split()))


def _digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (temporaries included; the run manifest, a
    log of each input's outcome, is not an output)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "octseg-manifest.jsonl"
    }


# -- readers -------------------------------------------------------------------------------------------------------


def reader_families(tmp: Path, n_offsets: int, seeds: int) -> list[Tally]:
    from napari_octseg._napari.reader import get_reader
    from napari_octseg.core.errors import LabelError, OctReadError
    from napari_octseg.io import read, read_labels

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    marker = tmp / "UNPICKLED_MARKER"
    groups: dict[str, list] = {
        "io.read: empty/random/zero bytes, folders (16 types)": [
            c for s in range(seeds) for c in fuzz_readers.generic_cases(seed=s)
        ],
        "io.read: crafted npy/npz/tif/png": list(fuzz_readers.array_cases(marker)),
    }
    if fuzz_readers.VOL.exists():
        groups["io.read: .vol truncated/absurd/byte-swapped"] = list(
            fuzz_readers.vol_cases(fuzz_readers.VOL.read_bytes(), n_offsets=n_offsets)
        )
    tallies = [Tally(name) for name in groups]
    napari_t, labels_t = Tally("napari reader -> None (same files)"), Tally("io.read_labels: label-type files above")
    k = 0
    for tally, cases in zip(tallies, groups.values()):
        for family, what, make in cases:
            case_dir = tmp / f"r{k}"
            case_dir.mkdir()
            k += 1
            path = make(case_dir)
            before = _digest(case_dir)
            t0 = time.perf_counter()
            try:
                read(path)
                ok, note = False, f"{family} {what}: accepted"
            except OctReadError as exc:
                ok, note = "\n" not in str(exc) and str(exc).startswith(path.name), f"{family} {what}: {exc!r}"
            except Exception as exc:  # noqa: BLE001 - any other type is a crash
                ok, note = False, f"{family} {what}: {type(exc).__name__}: {exc}"
            tally.add(ok, time.perf_counter() - t0, _digest(case_dir) != before or marker.exists(), note)
            t0 = time.perf_counter()
            try:
                ok = get_reader(str(path)) is None
            except Exception:  # noqa: BLE001
                ok = False
            napari_t.add(ok, time.perf_counter() - t0, _digest(case_dir) != before, f"{family} {what}")
            if family in ("npy", "tif", "tiff"):
                t0 = time.perf_counter()
                try:
                    read_labels(path)
                    ok = False
                except LabelError as exc:
                    ok = "\n" not in str(exc)
                except Exception:  # noqa: BLE001
                    ok = False
                labels_t.add(ok, time.perf_counter() - t0, marker.exists(), f"{family} {what}")
    return tallies + [napari_t, labels_t]


# -- model files -----------------------------------------------------------------------------------------------------


def checkpoint_family(tmp: Path, n: int) -> Tally:
    import torch

    from napari_octseg.core.errors import CheckpointError
    from napari_octseg.models import SegNet, SegNetConfig, load_checkpoint, save_checkpoint

    tally = Tally("model files: truncated/mutated/payload/foreign")
    torch.manual_seed(0)
    good = save_checkpoint(tmp / "good.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())
    blob, payload = good.read_bytes(), torch.load(good, weights_only=True)
    marker = tmp / "PAYLOAD_RAN"
    rng = np.random.default_rng(1)
    cases: list[tuple[str, Callable[[Path], None], bool]] = []  # (what, writer, may load as valid)
    for cut in sorted(set(rng.integers(0, len(blob), n).tolist()) | {0, 1, 100, len(blob) - 1}):
        cases.append((f"truncated at {cut}", lambda p, c=cut: p.write_bytes(blob[:c]), False))
    for i in range(n):

        def flip(p: Path, seed=i) -> None:
            r = np.random.default_rng(seed)
            data = bytearray(blob)
            for pos in r.integers(0, len(data), r.integers(1, 9)):
                data[pos] = int(r.integers(0, 256))
            p.write_bytes(bytes(data))

        cases.append((f"{i}: random byte changes", flip, True))  # a changed weight byte is still a checkpoint
    for where in ("training", "class_names", "normalization", "config", "state_dict", "top"):

        def evil(p: Path, where=where) -> None:
            obj = dict(payload)
            if where == "top":
                obj = fuzz_readers._Marker(str(marker))
            elif where == "state_dict":
                obj["state_dict"] = {**payload["state_dict"], "x": fuzz_readers._Marker(str(marker))}
            else:
                obj[where] = fuzz_readers._Marker(str(marker))
            torch.save(obj, p)

        cases.append((f"pickle payload in {where}", evil, False))
    raw = pickle.dumps(fuzz_readers._Marker(str(marker)))
    cases.append(("raw pickle payload", lambda p: p.write_bytes(raw), False))
    for key, value in (
        ("format_version", 99),
        ("class_names", ["a", "b"]),
        ("config", {"widths": [4, 8, 16]}),
        ("config", "nonsense"),
        ("state_dict", {}),
    ):
        cases.append((f"{key}={value!r}", lambda p, k=key, v=value: torch.save({**payload, k: v}, p), False))
    for size in (0, 10, 4096):
        cases.append((f"{size} random bytes", lambda p, s=size: p.write_bytes(rng.bytes(s)), False))
    for i, (what, write, may_load) in enumerate(cases):
        path = tmp / f"m{i}.pt"
        write(path)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # torch warns about the raw pickle's protocol before refusing it
                warnings.simplefilter("ignore")
                load_checkpoint(path)
            ok = may_load
        except CheckpointError as exc:
            ok = "\n" not in str(exc)
        except Exception as exc:  # noqa: BLE001
            ok, what = False, f"{what}: {type(exc).__name__}: {exc}"
        tally.add(ok and not marker.exists(), time.perf_counter() - t0, marker.exists(), what)
    return tally


# -- the command line ------------------------------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> tuple[int, str]:
    from napari_octseg.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except BaseException as exc:  # noqa: BLE001 - escaping the dispatcher is a crash
            code = -1
            err.write(f"ESCAPED {type(exc).__name__}: {exc}\n")
    return code, err.getvalue()


def _inputs(d: Path, n_random: int) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """Bad images, bad labels and bad models (plus the good ones under keys 'GOOD')."""
    import torch

    from napari_octseg.io import SUPPORTED_EXTENSIONS
    from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint

    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    models = {"GOOD": save_checkpoint(d / "tiny.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())}
    evil = torch.load(models["GOOD"], weights_only=True)
    evil["training"] = {"x": fuzz_readers._Marker(str(d / "PAYLOAD_RAN"))}
    torch.save(evil, d / "evil.pt")
    models.update({"payload": d / "evil.pt", "missing": d / "nope.pt"})
    (d / "foreign.pt").write_bytes(rng.bytes(3000))
    models["foreign"] = d / "foreign.pt"
    images = {
        "GOOD": d / "vol.npy",
        "missing": d / "nope.vol",
        "empty": d / "empty.npy",
        "nan": d / "nan.npy",
        "inf": d / "inf.npy",
        "4-D": d / "four.npy",
        "folder": d / "folder.tif",
    }
    np.save(images["GOOD"], rng.random((2, 32, 32)).astype(np.float32))
    images["empty"].write_bytes(b"")
    np.save(images["nan"], np.full((2, 32, 32), np.nan, np.float32))
    inf = rng.random((2, 32, 32)).astype(np.float32)
    inf[1, 3, 3] = np.inf
    np.save(images["inf"], inf)
    np.save(images["4-D"], np.zeros((2, 2, 8, 8), np.float32))
    images["folder"].mkdir()
    exts = list(SUPPORTED_EXTENSIONS)
    for i in range(n_random):
        ext = exts[i % len(exts)]
        images[f"random{ext}#{i}"] = d / f"random{i}{ext}"
        images[f"random{ext}#{i}"].write_bytes(rng.bytes(int(rng.integers(1, 5000))))
    base = np.zeros((2, 32, 32), np.uint8)
    base[:, 8:29] = np.arange(1, 8).repeat(3)[None, :, None]
    base[:, 29:] = 8
    labels = {
        "GOOD": d / "labels.npy",
        "shape": d / "l_shape.npy",
        "classes>9": d / "l_big.npy",
        "negative": d / "l_neg.npy",
        "float": d / "l_float.npy",
        "nan": images["nan"],
        "empty": images["empty"],
        "4-D": images["4-D"],
        "missing": d / "nope.npy",
    }
    np.save(labels["GOOD"], base)
    np.save(labels["shape"], base[:, :16])
    big = base.copy()
    big[0, 0, 0] = 200
    np.save(labels["classes>9"], big)
    np.save(labels["negative"], base.astype(np.int16) - 1)
    np.save(labels["float"], base.astype(np.float32) + 0.5)
    for i in range(n_random // 4):
        ext = (".npy", ".tif", ".tiff")[i % 3]
        labels[f"random{ext}#{i}"] = d / f"lrandom{i}{ext}"
        labels[f"random{ext}#{i}"].write_bytes(rng.bytes(int(rng.integers(1, 3000))))
    return images, labels, models


def _argv(cmd: str, out: Path, image: Path, labels: Path, model: Path, device: str = "cpu") -> list[str]:
    return {
        "info": ["info", str(image)],
        "segment": ["segment", str(image), "--out", str(out), "--model", str(model), "--device", device, "--quiet"],
        "gradcam": ["gradcam", str(image), "--out", str(out), "--model", str(model), "--device", device, "--quiet"],
        "thickness": [
            "thickness",
            str(labels),
            "--csv",
            str(out / "t.csv"),
            "--etdrs",
            str(out / "e.csv"),
            "--scale",
            "100,3.9,11",
            "--laterality",
            "OD",
            "--quiet",
        ],
        "evaluate": [
            "evaluate",
            "--pred",
            str(labels),
            "--truth",
            str(labels.parent / "labels.npy"),
            "--csv",
            str(out / "eval.csv"),
        ],
        "finetune": [
            "finetune",
            "--images",
            str(image),
            "--labels",
            str(labels),
            "--bscans",
            "0",
            "--base",
            str(model),
            "--out",
            str(out / "new.pt"),
            "--epochs",
            "1",
            "--device",
            device,
            "--quiet",
        ],
    }[cmd]


def cli_family(tmp: Path, n_random: int) -> Tally:
    import torch

    tally = Tally("octseg <cmd>: bad files/labels/models/device")
    d = tmp / "inputs"
    d.mkdir()
    images, labels, models = _inputs(d, n_random)
    G = (images["GOOD"], labels["GOOD"], models["GOOD"])
    cases = []
    for cmd in ("info", "segment", "gradcam", "finetune"):
        cases += [(cmd, f"image {k}", (p, G[1], G[2], "cpu")) for k, p in images.items() if k != "GOOD"]
    for cmd in ("thickness", "evaluate", "finetune"):
        cases += [(cmd, f"labels {k}", (G[0], p, G[2], "cpu")) for k, p in labels.items() if k != "GOOD"]
    for cmd in ("segment", "gradcam", "finetune"):
        cases += [(cmd, f"model {k}", (G[0], G[1], p, "cpu")) for k, p in models.items() if k != "GOOD"]
        if not torch.cuda.is_available():
            cases.append((cmd, "device cuda (absent)", (*G, "cuda")))
    inputs_before = _digest(d)
    for i, (cmd, what, (image, lab, model, device)) in enumerate(cases):
        out = tmp / f"c{i}"
        t0 = time.perf_counter()
        code, err = _run_cli(_argv(cmd, out, image, lab, model, device))
        lines = [line for line in err.splitlines() if line.strip()]
        ok = code == 1 and len(lines) == 1 and lines[0].startswith(f"octseg {cmd}: error: ") and "Traceback" not in err
        lost = (out.exists() and bool(_digest(out))) or (d / "PAYLOAD_RAN").exists()
        tally.add(ok, time.perf_counter() - t0, lost, f"{cmd} {what}: code {code}: {err.strip()[:160]}")
    if _digest(d) != inputs_before:
        tally.losses += 1
        tally.notes.append("an input file was modified")
    return tally


def _interrupting(real: Callable, after: int) -> Callable:
    """Ctrl-C after ``after`` progress events, or just before the result if the work has fewer."""

    def wrapped(*args, **kwargs):
        gen = real(*args, **kwargs)
        for _ in range(after):
            try:
                event = next(gen)
            except StopIteration:
                break
            yield event
        gen.close()
        raise KeyboardInterrupt

    return wrapped


OUTPUTS = {
    "segment": ["vol.labels.json", "vol.labels.tif"],
    "gradcam": ["vol.gradcam.json", "vol.gradcam.tif"],
    "thickness": ["e.csv", "t.csv"],
    "evaluate": ["eval.csv"],
    "finetune": ["new.pt"],
}
WORK = {
    "segment": ("napari_octseg.inference", "segment"),
    "gradcam": ("napari_octseg.explain", "gradcam"),
    "thickness": ("napari_octseg.core.thickness", "analyse"),
    "finetune": ("napari_octseg.learning.finetune", "finetune"),
}


@contextlib.contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _half_writer(real: Callable, fraction: float, exc: BaseException) -> Callable:
    def broken(path, data, *args, **kwargs):
        real(path, data[: int(len(data) * fraction)], *args, **kwargs)
        raise exc

    return broken


def _dying_file_writer(fraction: float, exc: BaseException, path_arg: int, head: bytes) -> Callable:
    """A stand-in for tifffile.imwrite / torch.save that writes a fraction of a file, then fails."""

    def broken(*args, **kwargs):
        target, data = args[path_arg], head + bytes(int(4096 * fraction))
        if hasattr(target, "write"):  # save_checkpoint serialises into a buffer, then writes the file itself
            target.write(data)
        else:
            pathlib.Path(target).write_bytes(data)
        raise exc

    return broken


def fault_families(tmp: Path, inputs: Path, repeats: int) -> list[Tally]:
    """Ctrl-C during the work, and crashes (disk full, Ctrl-C) part-way through writing, with --force over
    earlier outputs: the earlier files must stay byte-identical, and nothing partial may appear."""
    import importlib

    import tifffile
    import torch

    good = (inputs / "vol.npy", inputs / "labels.npy", inputs / "tiny.pt")
    interrupt = Tally("Ctrl-C during the work (segment/gradcam/thickness/finetune)")
    crash = Tally("crash while writing, --force over earlier outputs")
    counter = iter(range(1_000_000))

    def one(tally: Tally, cmd: str, what: str, expected: int, patch: contextlib.AbstractContextManager) -> None:
        out = tmp / f"f{next(counter)}"
        out.mkdir()
        for name in OUTPUTS[cmd]:
            (out / name).write_bytes(f"earlier {name}".encode())
        before = _digest(out)
        t0 = time.perf_counter()
        with patch:
            code, err = _run_cli(_argv(cmd, out, *good) + ["--force"])
        ok = code == expected and "Traceback" not in err and "ESCAPED" not in err
        tally.add(ok, time.perf_counter() - t0, _digest(out) != before, f"{cmd} {what}: code {code} {err[-160:]}")

    for cmd, (module, name) in WORK.items():
        mod = importlib.import_module(module)
        for after in range(repeats):
            one(
                interrupt,
                cmd,
                f"Ctrl-C after {after} events",
                130,
                _patched(mod, name, _interrupting(getattr(mod, name), after)),
            )
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for f in np.linspace(0.0, 0.95, repeats):
        for exc, code in ((disk_full, 1), (KeyboardInterrupt(), 130)):
            what = f"dies at {f:.0%} ({type(exc).__name__})"
            for cmd in ("segment", "gradcam", "thickness", "evaluate"):
                one(
                    crash,
                    cmd,
                    f"text write {what}",
                    code,
                    _patched(pathlib.Path, "write_text", _half_writer(pathlib.Path.write_text, float(f), exc)),
                )
            for cmd in ("segment", "gradcam"):
                one(
                    crash,
                    cmd,
                    f"TIFF write {what}",
                    code,
                    _patched(tifffile, "imwrite", _dying_file_writer(float(f), exc, 0, b"II*\x00")),
                )
            one(
                crash,
                "finetune",
                f"checkpoint write {what}",
                code,
                _patched(torch, "save", _dying_file_writer(float(f), exc, 1, b"PK\x03\x04")),
            )
    return [interrupt, crash]


# -- inference under memory pressure ---------------------------------------------------------------------------------


def oom_family(n: int) -> Tally:
    import torch
    from torch import nn

    from napari_octseg.core.errors import InputError
    from napari_octseg.core.progress import run_generator
    from napari_octseg.inference import segment
    from napari_octseg.models import LoadedModel, SegNet, SegNetConfig

    tally = Tally("out-of-memory back-off (recovered = clear)")
    torch.manual_seed(0)
    net = SegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    data = np.random.default_rng(3).random((7, 32, 32)).astype(np.float32)
    reference = run_generator(segment(data, LoadedModel(model=net), batch_size=1, device="cpu")).labels

    class Oom(nn.Module):
        def __init__(self, limit: int, kind: type) -> None:
            super().__init__()
            self.net, self.limit, self.kind = net, limit, kind

        def forward(self, x):
            if x.shape[0] > self.limit:
                raise (
                    self.kind("CUDA out of memory. Tried to allocate 9.00 GiB")
                    if self.kind is not RuntimeError
                    else RuntimeError("CUDA error: out of memory")
                )
            return self.net(x)

    rng = np.random.default_rng(4)
    for i in range(n):
        limit, batch = int(rng.integers(0, 6)), int(rng.integers(1, 9))
        kind = (torch.OutOfMemoryError, RuntimeError)[i % 2]
        t0 = time.perf_counter()
        try:
            labels = run_generator(
                segment(data, LoadedModel(model=Oom(limit, kind)), batch_size=batch, device="cpu")
            ).labels
            ok = limit >= 1 and np.array_equal(labels, reference)
        except InputError:
            ok = limit == 0
        except Exception as exc:  # noqa: BLE001
            ok = False
            tally.notes.append(f"{type(exc).__name__}: {exc}")
        tally.add(ok, time.perf_counter() - t0, False, f"limit {limit} batch {batch}")
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--skip-issue16", action="store_true", help="leave out the families of issue 16")
    parser.add_argument("--only-issue16", action="store_true", help="run only the families of issue 16")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    scale = 1 if args.quick else 4
    start = time.perf_counter()
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for sub in ("readers", "models", "cli", "faults"):
            (tmp / sub).mkdir()
        if not args.only_issue16:
            tallies += reader_families(tmp / "readers", n_offsets=100 * scale, seeds=scale)
            tallies.append(checkpoint_family(tmp / "models", n=25 * scale))
            tallies.append(cli_family(tmp / "cli", n_random=16 * scale))
            tallies += fault_families(tmp / "faults", tmp / "cli" / "inputs", repeats=1 + scale)
            tallies.append(oom_family(10 * scale))
        if not args.skip_issue16:
            import safety_issue16

            (tmp / "issue16").mkdir()
            tallies += safety_issue16.families(Tally, tmp / "issue16", quick=args.quick)
    width = max(len(t.family) for t in tallies) + 2
    header = f"{'family':<{width}}{'cases':>7}{'clear':>7}{'crashes':>9}{'hangs':>7}{'losses':>8}"
    print(header)
    print("-" * len(header))
    for t in tallies:
        print(f"{t.family:<{width}}{t.tried:>7}{t.clear:>7}{t.crashes:>9}{t.hangs:>7}{t.losses:>8}")
    columns = ("tried", "clear", "crashes", "hangs", "losses")
    total = Tally("total", *(sum(getattr(t, k) for t in tallies) for k in columns))
    print("-" * len(header))
    print(
        f"{'total':<{width}}{total.tried:>7}{total.clear:>7}{total.crashes:>9}{total.hangs:>7}{total.losses:>8}"
        f"   ({time.perf_counter() - start:.0f} s; hang = a case over {HANG_S:.0f} s)"
    )
    for t in tallies:
        for note in t.notes:
            print(f"  {t.family}: {note}")
    return 1 if total.crashes or total.hangs or total.losses else 0


if __name__ == "__main__":
    sys.exit(main())
