"""Safety report families of issue 16 (imported by ``safety_report.py``): attacks and accidents the first suite missed.

* hostile small files: an E2E chunk chain crawling forward, a HEYEX XML pointing at a huge PNG or outside its
  folder, zlib TIFF / deflated NPZ bombs, JPEG/PNG headers claiming huge images, through ``io.read``,
  ``octseg evaluate`` and ``--replay`` (a case also fails if the process grew by more than 1 GB);
* hostile model files: config ranges and types, tensor shapes/dtypes, NaN/inf/int weights, negative
  BatchNorm variances, a zip bomb, a string version;
* outputs that resolve to inputs, in every subcommand;
* messages: unusable ``--scale``/``--fovea``, device names, B-scans smaller than a crop, non-zip replay,
  full disk, memory estimate, control characters in file names;
* signals and concurrent writers (subprocesses): SIGTERM mid-write, SIGKILL then a rerun, two runs to one
  output; a temporary left behind or a lost output is a loss.

The crafted files are built by ``tests/_safety_helpers.py`` (the same files the regression tests use).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import _safety_helpers as H  # noqa: E402

GB = 1 << 30


#: The run manifest logs each input's outcome; it is not an output. What one segmentation leaves.
MANIFEST = "octseg-manifest.jsonl"
OUTPUTS = ["vol.labels.json", "vol.labels.tif", "vol.qc.csv"]


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_cases(tally, cases: list[tuple[str, Callable[[], object], tuple[type, ...], str]]) -> None:
    """Each case must raise one of its error types, on one line, containing its text; RSS growth < 1 GB."""
    for what, call, errors, text in cases:
        before, t0 = _rss(), time.perf_counter()
        try:
            call()
            ok, note = False, f"{what}: accepted"
        except errors as exc:
            ok, note = "\n" not in str(exc) and text in str(exc), f"{what}: {exc}"
        except Exception as exc:  # noqa: BLE001 - any other type is a crash
            ok, note = False, f"{what}: {type(exc).__name__}: {exc}"
        grown = _rss() - before
        if grown > GB:
            ok, note = False, f"{what}: grew {grown / GB:.1f} GB"
        tally.add(ok, time.perf_counter() - t0, False, note)


def hostile_files(tally_cls, tmp: Path):
    from napari_octseg.cli.evaluate import read_label_file
    from napari_octseg.core.errors import InputError, LabelError, OctReadError
    from napari_octseg.io import read
    from napari_octseg.learning.finetune_data import load_replay

    tally = tally_cls("issue 16: hostile small files (e2e/xml/tif/npz/jpg/png)")
    e2e = H.e2e_crawler(tmp / "crawl.e2e")
    e2e_small = H.e2e_crawler(tmp / "crawl2.e2e", chunks=50, folders=4096)
    tif = H.zlib_tiff_bomb(tmp / "bomb.tif")
    npz = H.npz_bomb(tmp / "bomb.npz", {"images": (1, 8, 8), "labels": (16, 4096, 4096)})
    xml_dir = tmp / "xml"
    xml_dir.mkdir()
    H.png_claiming(xml_dir / "big.png", 13000, 13000)
    H.heyex_xml(xml_dir, ["big.png"] * 40)
    out_dir = tmp / "xml_out"
    out_dir.mkdir()
    (tmp / "outside.png").write_bytes(H.png_claiming(tmp / "o.png", 8, 8).read_bytes())
    H.heyex_xml(out_dir, ["../outside.png"])
    abs_dir = tmp / "xml_abs"
    abs_dir.mkdir()
    H.heyex_xml(abs_dir, [str(tmp / "outside.png")])
    bad_npz = tmp / "neg.npz"
    np.savez(bad_npz, images=np.zeros((1, 16, 16), np.uint8), labels=np.full((1, 16, 16), -2, np.int8))
    not_zip = tmp / "replay.npz"
    not_zip.write_text("not a zip")
    read_err = (OctReadError,)
    cases = [
        ("e2e crawling chain", lambda: read(e2e), read_err, "next chunk starts inside them"),
        ("e2e crawling chain (small)", lambda: read(e2e_small), read_err, "corrupt chunk chain"),
        ("xml: 40 x 13000^2 png", lambda: read(xml_dir / "export.xml"), read_err, "larger than any OCT B-scan"),
        ("xml: ../ ExamURL", lambda: read(out_dir / "export.xml"), read_err, "outside the export's folder"),
        ("xml: absolute ExamURL", lambda: read(abs_dir / "export.xml"), read_err, "outside the export's folder"),
        ("zlib tiff bomb: read", lambda: read(tif), read_err, "decompression bomb"),
        ("zlib tiff bomb: evaluate", lambda: read_label_file(tif, "prediction"), (LabelError,), "bomb"),
        ("npz bomb: read", lambda: read(npz), read_err, "decompression bomb"),
        ("npz bomb: evaluate", lambda: read_label_file(npz, "truth"), (LabelError,), "decompression bomb"),
        ("npz bomb: replay", lambda: load_replay([npz]), (InputError,), "decompression bomb"),
        ("non-zip replay", lambda: load_replay([not_zip]), (InputError,), "not a readable .npz"),
        ("negative int8 Duke labels", lambda: read(bad_npz), (LabelError,), "labels must be integers 0..9"),
    ]
    for w, h in ((12000, 12000), (6000, 6000), (65000, 65000), (9000, 9000)):
        jpg = H.jpeg_claiming(tmp / f"j{w}x{h}.jpg", w, h)
        png = H.png_claiming(tmp / f"p{w}x{h}.png", w, h)
        cases.append((f"jpeg claiming {w}x{h}", lambda p=jpg: read(p), read_err, ""))
        cases.append((f"png claiming {w}x{h}", lambda p=png: read(p), read_err, ""))
    _run_cases(tally, cases)
    return tally


def hostile_models(tally_cls, tmp: Path):
    import torch

    from napari_octseg.core.errors import CheckpointError
    from napari_octseg.models import SegNet, SegNetConfig, load_checkpoint, save_checkpoint

    tally = tally_cls("issue 16: hostile model files (ranges/types/shapes/weights)")
    torch.manual_seed(0)
    good = save_checkpoint(tmp / "good.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())
    base = torch.load(good, weights_only=True)

    def edited(name: str, edit: Callable[[dict], None]) -> Path:
        p = copy.deepcopy(base)
        edit(p)
        path = tmp / f"{name}.pt"
        torch.save(p, path)
        return path

    def put(*keys_value):
        *keys, value = keys_value

        def edit(p):
            node = p
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value

        return edit

    sd = "state_dict"
    edits = {
        "widths 8000": put("config", "widths", [8000, 8000]),
        "depth 16": put("config", "widths", [4] * 16),
        "width 0": put("config", "widths", [0, 8, 8]),
        "n_classes -1": put("config", "n_classes", -1),
        "n_classes True": put("config", "n_classes", True),
        "dropout nan": put("config", "dropout", math.nan),
        "normalization 5": put("normalization", 5),
        "normalization low>high": put("normalization", {"method": "percentile", "low": 90.0, "high": 10.0}),
        "normalization nan": put("normalization", {"method": "percentile", "low": math.nan, "high": 99.0}),
        "class_names 5": put("class_names", 5),
        "class_names ints": put("class_names", list(range(10))),
        "training list": put("training", [1, 2]),
        "training deep": put("training", eval("{'a':" * 50 + "1" + "}" * 50)),  # noqa: S307 - a literal
        "training tensor 4 MB": put("training", {"x": torch.zeros(1 << 20)}),
        "version '1'": put("format_version", "1"),
        "version 1.0": put("format_version", 1.0),
        "NaN weights": lambda p: p[sd]["classifier.weight"].fill_(math.nan),
        "inf weights": lambda p: p[sd]["encoder.0.0.weight"].fill_(math.inf),
        "1e300 float64": lambda p: p[sd].__setitem__("classifier.bias", torch.full((10,), 1e300, dtype=torch.float64)),
        "int weights": lambda p: p[sd].__setitem__("classifier.weight", p[sd]["classifier.weight"].to(torch.int64)),
        "negative running_var": lambda p: p[sd]["encoder.0.1.running_var"].fill_(-5.0),
        "wrong shape": lambda p: p[sd].__setitem__("classifier.weight", torch.zeros(10, 4, 3, 3)),
        "big extra tensor": lambda p: p[sd].__setitem__("extra", torch.zeros(1 << 20)),
    }
    paths = {n: edited(f"e{i}", e) for i, (n, e) in enumerate(edits.items())}
    cases = [(n, lambda p=p: load_checkpoint(p), (CheckpointError,), "") for n, p in paths.items()]
    import zipfile

    bomb = tmp / "zipbomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w") as dst:
        prefix = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            dst.writestr(info, src.read(info))
    with (
        zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as dst,
        dst.open(f"{prefix}/data/999", "w", force_zip64=True) as fh,
    ):
        for _ in range(64):
            fh.write(bytes(1 << 22))  # 256 MiB of zeros deflated into ~250 KB
    cases.append(("zip member inflating to 256 MiB", lambda: load_checkpoint(bomb), (CheckpointError,), "bomb"))
    _run_cases(tally, cases)
    return tally


def _cli(argv) -> tuple[int, str]:
    from napari_octseg.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


def cli_cases(tally_cls, tmp: Path):
    """Outputs that are inputs, and the messages of issue 16 (in-process ``octseg``)."""
    import tifffile
    import torch

    from napari_octseg.core import resources
    from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint

    tally = tally_cls("issue 16: output = input, messages, memory estimate")
    torch.manual_seed(0)
    model = save_checkpoint(tmp / "tiny.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())
    labels = np.zeros((3, 48, 40), np.uint8)
    labels[:, 10:], labels[:, 30:], labels[:, 40:] = 1, 7, 8
    img, corr, lab = tmp / "img.npy", tmp / "corr.npy", tmp / "labels.tif"
    np.save(img, np.random.default_rng(0).random((3, 48, 40)).astype(np.float32))
    np.save(corr, labels)
    tifffile.imwrite(lab, labels)
    np.save(tmp / "tiny_img.npy", np.ones((1, 1, 1), np.float32))
    np.save(tmp / "tiny_lab.npy", np.ones((1, 1, 1), np.uint8))
    (tmp / "nozip.npz").write_text("not a zip")
    out = tmp / "out"
    out.mkdir()
    (out / "img.labels.tif").symlink_to(img)
    (out / "img.gradcam.tif").symlink_to(img)
    ft = ["finetune", "--images", img, "--labels", corr, "--base", model, "--device", "cpu"]
    th = ["thickness", lab, "--csv", tmp / "t.csv", "--etdrs", tmp / "e.csv", "--laterality", "OD"]
    cases = [
        ("finetune --out = --labels", [*ft, "--out", corr, "--force"], "is also the input"),
        ("thickness --csv = input", ["thickness", lab, "--csv", lab, "--force"], "is also the input"),
        ("evaluate --csv = --pred", ["evaluate", "--pred", lab, "--truth", lab, "--csv", lab, "--force"], "is also"),
        ("segment output -> input", ["segment", img, "--model", model, "--out", out, "--force"], "is also the input"),
        ("gradcam output -> input", ["gradcam", img, "--model", model, "--out", out, "--force"], "is also the input"),
        ("--scale 0,0,0", [*th, "--scale=0,0,0"], "--scale must be"),
        ("--scale 1e308", [*th, "--scale=1e308,1,1"], "--scale must be"),
        ("--fovea outside", [*th, "--scale=120,3.9,11", "--fovea", "99,5"], "lies outside the scan"),
        (
            "finetune 1x1 image",
            [
                *ft[:1],
                "--images",
                tmp / "tiny_img.npy",
                "--labels",
                tmp / "tiny_lab.npy",
                "--base",
                model,
                "--out",
                tmp / "n.pt",
            ],
            "too small to learn from",
        ),
        ("finetune non-zip replay", [*ft, "--out", tmp / "n.pt", "--replay", tmp / "nozip.npz"], "not a readable"),
        ("finetune --device cpu:x", [*ft[:-2], "--out", tmp / "n.pt", "--device", "cpu:x"], "unknown device"),
        ("newline in a file name", ["info", tmp / "a\nb.npy"], "a\\nb.npy"),
    ]
    inputs = (img, corr, lab)
    for what, argv, text in cases:
        before = [p.read_bytes() for p in inputs]
        t0 = time.perf_counter()
        code, err = _cli(argv)
        lines = [ln.split("\r")[-1] for ln in err.split("\n")]  # a progress bar redraws with \r
        lines = [ln for ln in lines if ln.strip()]
        ok = code in (1, 2) and text in err and "Traceback" not in err and (code == 2 or len(lines) == 1)
        lost = [p.read_bytes() for p in inputs] != before
        tally.add(ok, time.perf_counter() - t0, lost, f"{what}: {code} {err!r}")
    real = resources.available_memory
    resources.available_memory = lambda: 1 << 20
    try:
        for cmd in ("segment", "gradcam"):
            t0 = time.perf_counter()
            code, err = _cli([cmd, img, "--model", model, "--out", tmp / "o2", "--batch-size", "2"])
            tally.add(code == 1 and "needs about" in err, time.perf_counter() - t0, False, f"memory {cmd}: {err!r}")
    finally:
        resources.available_memory = real
    return tally


def signal_cases(tally_cls, tmp: Path, repeats: int):
    """SIGTERM / SIGKILL mid-write and two concurrent writers, in subprocesses (``octseg segment``)."""
    import torch

    from napari_octseg.core.atomic import TEMP_SUFFIX
    from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint

    tally = tally_cls("issue 16: SIGTERM/SIGKILL mid-write, concurrent writers")
    torch.manual_seed(0)
    model = save_checkpoint(tmp / "tiny.pt", SegNet(SegNetConfig(widths=(4, 8, 8))).eval())
    np.save(tmp / "vol.npy", np.random.default_rng(0).random((2, 32, 32)).astype(np.float32))
    prelude = (
        "import os, pathlib, time, tifffile\n_r = tifffile.imwrite\n"
        "def _s(p, *a, **k):\n    _r(p, *a, **k)\n"
        "    pathlib.Path(os.environ['MARK'] + str(os.getpid())).touch()\n"
        "    time.sleep(float(os.environ.get('SLEEP', '120')))\ntifffile.imwrite = _s\n"
    )

    def spawn(out: Path, mark: Path, sleep: str = "120"):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "OMP_NUM_THREADS": "1",
            "OCTSEG_TEST_RSS": os.devnull,
            "OCTSEG_TEST_PRELUDE": prelude,
            "MARK": str(mark),
            "SLEEP": sleep,
        }
        argv = ["segment", tmp / "vol.npy", "--model", model, "--out", out, "--device", "cpu"]
        return subprocess.Popen(
            [sys.executable, "-c", H.CHILD, *map(str, argv)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def wait_mark(mark: Path, proc) -> None:
        t0 = time.monotonic()
        while not list(mark.parent.glob(mark.name + "*")) and proc.poll() is None and time.monotonic() - t0 < 600:
            time.sleep(0.2)

    for k in range(repeats):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            out, mark = tmp / f"o{k}{sig}", tmp / f"mark{k}{sig}."
            t0 = time.perf_counter()
            proc = spawn(out, mark)
            wait_mark(mark, proc)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            names = sorted(p.name for p in out.iterdir() if p.name != MANIFEST) if out.exists() else []
            if sig == signal.SIGTERM:
                ok = proc.returncode == 143 and "terminated" in err and "Traceback" not in err
                lost = bool(names)
            else:
                code, _, _, _ = H.run_octseg("segment", tmp / "vol.npy", "--model", model, "--out", out)
                after = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
                ok = code == 0 and all(n.endswith(TEMP_SUFFIX) for n in names)
                lost = after != OUTPUTS
            tally.add(ok, time.perf_counter() - t0 - 0.0, lost, f"{sig.name}: {proc.returncode} {err!r} {names}")
        out, mark = tmp / f"race{k}", tmp / f"race{k}."
        t0 = time.perf_counter()
        procs = [spawn(out, mark, sleep="6") for _ in range(2)]
        results = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
        codes = sorted(rc for rc, _ in results)
        names = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
        ok = codes == [0, 1] and all("Traceback" not in e for _, e in results)
        tally.add(ok, 0.0, names != OUTPUTS, f"race: {results}")
        del t0
    return tally


def families(tally_cls, tmp: Path, quick: bool) -> list:
    """Every issue-16 family, each in its own sub-folder of ``tmp``."""
    out = []
    for name, fn in (("files", hostile_files), ("models", hostile_models), ("cli16", cli_cases)):
        (tmp / name).mkdir()
        out.append(fn(tally_cls, tmp / name))
    (tmp / "signals").mkdir()
    out.append(signal_cases(tally_cls, tmp / "signals", repeats=1 if quick else 2))
    return out
