"""``octseg thickness`` over a cohort: one long-format CSV and one sector CSV for many label volumes.

Inputs are label files, folders (their ``*.labels.tif``) or run manifests (the label files of their
``segment`` rows that ended done or skipped). Each volume is measured once into per-file parts in
``--out DIR`` (``<subject>.thickness.csv``, ``<subject>.sectors.csv`` with ``--etdrs``, and the
``<subject>.thickness.json`` record), through the same resumable loop as ``octseg segment``: a re-run
measures only new or changed label files. The cohort tables are then the parts concatenated, in
sorted input order, with ``subject`` and ``file`` columns in front of each row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..batch import RUN_KEY, RUN_RECORD_VERSION, data_file_record, latest_rows, read_manifest, read_run_record
from ..core.atomic import atomic_paths, check_writable
from ..core.errors import InputError, OctsegError
from ._batch import BatchSpec, Outcome, run_batch
from .segment import LABELS_SUFFIX

PART_SUFFIXES = (".thickness.csv", ".sectors.csv")
PART_SIDECAR = ".thickness.json"
#: The cohort tables prefix each per-file row with the label file it was measured from; the per-file rows
#: already start with the scan's identity columns (subject, source file, eye, ...; core.tables).
IDENTITY_COLUMNS = ("labels_file",)


def subject_of(path: Path) -> str:
    """The subject a label file belongs to: its name without ``.labels.tif`` (or its last suffix)."""
    name = path.name
    return name[: -len(LABELS_SUFFIX)] if name.endswith(LABELS_SUFFIX) else path.stem


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Label files named by ``inputs``: files as given, folders' ``*.labels.tif``, manifests' segment outputs."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files = sorted(path.glob(f"*{LABELS_SUFFIX}"))
            if not files:
                raise InputError(f"{path}: folder holds no *{LABELS_SUFFIX} label files")
            found.extend(files)
        elif path.suffix == ".jsonl":
            found.extend(_manifest_labels(path))
        else:
            found.append(path)
    return found


def _manifest_labels(path: Path) -> list[Path]:
    try:
        rows = latest_rows(read_manifest(path), command="segment")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    files = []
    for row in rows.values():
        outputs = row.get("outputs") or []
        if row.get("status") in ("done", "skipped") and outputs:
            files.append(path.parent / str(outputs[0]))
    if not files:
        raise InputError(f"{path}: no segmented label files recorded in this manifest")
    return sorted(files)


def is_cohort(args: argparse.Namespace) -> bool:
    """Several inputs, a folder or a manifest: the cohort path (one label file keeps the single-file path)."""
    inputs: list[Path] = args.inputs
    return len(inputs) > 1 or inputs[0].is_dir() or inputs[0].suffix == ".jsonl"


def run_cohort(args: argparse.Namespace) -> int:
    """Measure every label file into parts (resumable, shardable), then write the two cohort tables."""
    if args.image is not None or args.fovea is not None:
        raise InputError("--image and --fovea name one volume; in a cohort run give --scale / --laterality or none")
    tables = [args.csv] + ([args.etdrs] if args.etdrs is not None else [])
    if len(tables) == 2 and tables[0].resolve() == tables[1].resolve():
        raise InputError(f"the per-A-scan and the sector CSV must be two different files; both are {tables[0]}")
    table_record = args.csv.with_suffix(".json")
    record_base = {"version": RUN_RECORD_VERSION, "command": "thickness-cohort"}
    if not args.force and read_run_record(table_record) is None:  # tables octseg made are regenerated
        for table in tables:
            check_writable(table, force=False)
    files = expand_inputs(args.inputs)
    out_dir: Path = args.out if args.out is not None else args.csv.parent
    suffixes = PART_SUFFIXES if args.etdrs is not None else PART_SUFFIXES[:1]
    spec = BatchSpec(
        command="thickness",
        suffixes=(*suffixes, PART_SIDECAR),
        done_verb="measured",
        load=lambda path: _load(path, args),
        process=lambda path, loaded, targets, run, overwrite: _measure(path, loaded, targets, run, overwrite, args),
        options={"scale": args.scale, "laterality": args.laterality, "etdrs": args.etdrs is not None},
        stem=subject_of,
    )
    batch_args = argparse.Namespace(out=out_dir, force=args.force, shard=args.shard)
    statuses: dict[Path, str] = {}
    code = run_batch(spec, batch_args, files, statuses)
    if args.shard is not None:
        print("cohort tables not written by a shard: run once more without --shard to concatenate the parts")
        return code
    measured = sorted(f for f, status in statuses.items() if status in ("done", "skipped"))
    parts = [(subject_of(f), f, tuple(out_dir / f"{subject_of(f)}{s}" for s in suffixes)) for f in measured]
    if not parts:
        raise InputError("no label file could be measured; no cohort table written")
    _write_tables(parts, tables, table_record, record_base)
    print(f"cohort of {len(parts)} volumes -> " + ", ".join(str(t) for t in tables))
    return code


def _load(path: Path, args: argparse.Namespace):
    from .thickness import load_inputs

    return load_inputs(argparse.Namespace(input=path, image=None, scale=args.scale, laterality=args.laterality))


def _measure(path: Path, loaded, targets: tuple[Path, ...], run: dict, overwrite: bool, args) -> Outcome:
    """Measure one label volume and write its part CSV(s) and record, all or nothing."""
    from ..core.progress import run_generator
    from ..core.thickness import analyse, ascan_csv_text, sector_csv_text
    from .thickness import etdrs_check

    labels, scale, laterality, pattern = loaded.labels, loaded.scale, loaded.laterality, loaded.pattern
    try:
        if args.etdrs is not None:
            etdrs_check(labels, scale, pattern, laterality)
        report = run_generator(analyse(labels, scale, laterality, pattern))
    except OctsegError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    subject = subject_of(path)
    texts = [ascan_csv_text(report.thickness, loaded.identity)]
    if args.etdrs is not None:
        texts.append(sector_csv_text(report.sectors, loaded.identity))
    *data_paths, sidecar_path = targets
    for target in targets:
        check_writable(target, overwrite)
    with atomic_paths(*targets) as temporaries:
        files = {}
        for tmp, target, text in zip(temporaries, data_paths, texts):
            tmp.write_text(text, encoding="utf-8")
            files[target.name] = data_file_record(tmp)
        sidecar = {
            "labels_file": str(path.resolve()),
            "subject": subject,
            "unit": report.thickness.unit,
            "scale_um": list(scale) if scale is not None else None,
            "laterality": laterality,
            RUN_KEY: {**run, "files": files},
        }
        temporaries[-1].write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    unit = "µm" if report.thickness.unit == "um" else "px"
    return Outcome(f"{path}: {labels.shape[0]} B-scans measured ({unit}) -> {data_paths[0]}", bscans=labels.shape[0])


def _labels_sidecar(path: Path) -> dict:
    """Eye and scan pattern ``octseg segment`` recorded beside a label file (``<stem>.json``); ``{}`` if none.

    The cohort's one read of the labels sidecar, so its schema has one reader here to change.
    """
    try:
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    eye = info.get("laterality")
    return {"laterality": eye if eye in ("OD", "OS") else None, "scan_pattern": info.get("scan_pattern")}


def _identity_prefix(subject: str, file: Path) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([str(file)])
    return out.getvalue() + ","


def _write_tables(
    parts: list[tuple[str, Path, tuple[Path, ...]]], tables: list[Path], record_path: Path, record_base: dict
) -> None:
    """Concatenate the parts into the tables (streamed, atomically) and record what was written."""
    with atomic_paths(*tables, record_path) as temporaries:
        files = {}
        for column, (tmp, table) in enumerate(zip(temporaries, tables)):
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                header: str | None = None
                for subject, file, paths in parts:
                    with open(paths[column], encoding="utf-8") as part:
                        first = part.readline()
                        if header is None:
                            header = first
                            out.write(",".join(IDENTITY_COLUMNS) + "," + header)
                        elif first != header:
                            raise InputError(
                                f"{file}: its table has columns {first.strip()!r}, the cohort's are "
                                f"{header.strip()!r} (a known scale for every volume: pass --scale)"
                            )
                        prefix = _identity_prefix(subject, file)
                        for line in part:
                            out.write(prefix + line)
            files[table.name] = data_file_record(tmp)
        temporaries[-1].write_text(json.dumps({RUN_KEY: {**record_base, "files": files}}, indent=2) + "\n")
