"""The loop every per-input command runs: plan (skip / redo / refuse), prefetch, process, record.

Which outputs are up to date, which share of the inputs is this process's and how the manifest is
written live in :mod:`napari_octseg.batch`; this module turns them into the CLI's behaviour: one line
per input, one manifest row per input, the exit code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..batch import (
    Manifest,
    OutputState,
    Shard,
    fingerprint,
    launch_env,
    launch_shard,
    output_state,
    parse_shard,
    prefetched,
    remove_temporaries,
    shard_inputs,
)
from ..core.atomic import refuse_output_is_input
from ..core.errors import InputError, OctsegError, one_line_message
from ._common import output_stem

V = TypeVar("V")


def shard_arg(text: str) -> Shard:
    """argparse ``type=`` for ``--shard K/N`` (a bad value is a usage error)."""
    try:
        return parse_shard(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--shard {text!r}: ")) from None


def add_shard_option(p: argparse.ArgumentParser) -> None:
    """Add ``--shard K/N``."""
    p.add_argument(
        "--shard",
        type=shard_arg,
        default=None,
        metavar="K/N",
        help="process share K (0-based) of N of the sorted inputs, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; "
        "under torchrun each rank takes its share of it automatically",
    )


@dataclass
class Outcome:
    """What processing one input reports: the printed line, its B-scans and a quality summary (or None)."""

    line: str
    bscans: int | None = None
    quality: Any = None


@dataclass
class BatchSpec(Generic[V]):
    """One per-input command: its outputs, its fingerprint parts, how to read an input and process it.

    ``suffixes`` name the data files then the JSON sidecar (last), as ``DIR/<stem><suffix>``.
    ``process(path, loaded_input, targets, run_record, overwrite)`` writes the outputs (the sidecar
    carries ``run_record`` under ``"run"``) and returns an :class:`Outcome`.
    """

    command: str
    suffixes: tuple[str, ...]
    done_verb: str
    load: Callable[[Path], V]
    process: Callable[[Path, V, tuple[Path, ...], dict, bool], Outcome]
    model: dict | None = None
    options: dict = field(default_factory=dict)
    stem: Callable[[Path], str] = field(default=output_stem)


@dataclass
class _Plan:
    path: Path
    targets: tuple[Path, ...] = ()
    expected: dict | None = None
    state: OutputState = OutputState("missing")
    error: str | None = None


def _plan(spec: BatchSpec, path: Path, out_dir: Path, force: bool) -> _Plan:
    targets = tuple(out_dir / f"{spec.stem(path)}{s}" for s in spec.suffixes)
    try:
        refuse_output_is_input(targets, [path])
    except InputError as exc:
        return _Plan(path, targets, error=str(exc))
    try:
        expected = fingerprint(spec.command, spec.model, spec.options, path)
    except OSError:  # unreadable or absent: the reader says why, in its own words
        return _Plan(path, targets)
    if force:
        return _Plan(path, targets, expected)
    state = output_state(targets[:-1], targets[-1], expected)
    if state.status == "foreign":
        return _Plan(path, targets, expected, state, f"{state.reason} (use --force to overwrite)")
    return _Plan(path, targets, expected, state)


def run_batch(
    spec: BatchSpec, args: argparse.Namespace, inputs: Sequence[Path], statuses: dict[Path, str] | None = None
) -> int:
    """Process this process's share of ``inputs`` into ``args.out``; return 1 if any input failed, else 0.

    Up-to-date outputs are skipped, stale or partial ones redone, files octseg did not make (or that
    changed since) kept unless ``args.force``. Two inputs with the same output name: the later one (in
    the order given) fails. Each input gets one line on stdout (or one ``error:`` line on stderr) and one
    manifest row; the next input is read in a background thread while the current one is processed.
    ``statuses``, when given, receives each input's outcome (``done``, ``skipped`` or ``failed``).
    """
    statuses = {} if statuses is None else statuses
    out_dir: Path = args.out
    env = launch_env()
    shard = launch_shard(getattr(args, "shard", None), env)
    first_of_stem: dict[str, Path] = {}
    duplicates: dict[Path, Path] = {}
    for path in inputs:
        stem = spec.stem(path)
        if stem in first_of_stem and first_of_stem[stem] != path:
            duplicates[path] = first_of_stem[stem]
        first_of_stem.setdefault(stem, path)
    unique = list(dict.fromkeys(inputs))
    mine = shard_inputs(unique, shard) if shard.count > 1 else unique
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir, spec.command, shard if shard.count > 1 else None)
    model = {"model": spec.model, "options": spec.options}

    plans = []
    for path in mine:
        if path in duplicates:
            stem = spec.stem(path)
            plans.append(_Plan(path, error=f"{path}: same output name {stem!r} as {duplicates[path]} (rename one)"))
        else:
            plans.append(_plan(spec, path, out_dir, args.force))
    work = [p for p in plans if p.error is None and (args.force or p.state.needs_work)]
    loads = prefetched([p.path for p in work], spec.load)

    made = skipped = failures = 0
    t0 = time.perf_counter()
    try:
        for plan in plans:
            row: dict[str, Any] = {"file": str(plan.path), **model, "quality": None}
            statuses[plan.path] = "failed"
            if plan.error is not None:
                failures += 1
                _report_failure(spec.command, manifest, row, plan.error)
                continue
            if not (args.force or plan.state.needs_work):
                skipped += 1
                statuses[plan.path] = "skipped"
                print(f"{plan.path}: up to date, skipped")
                manifest.append(
                    {
                        **row,
                        "status": "skipped",
                        "reason": plan.state.reason,
                        "seconds": 0.0,
                        "outputs": [t.name for t in plan.targets],
                    }
                )
                continue
            _, future = next(loads)
            start = time.perf_counter()
            try:
                remove_temporaries(plan.targets)
                loaded = future.result()
                del future
                expected = plan.expected or fingerprint(spec.command, spec.model, spec.options, plan.path)
                overwrite = args.force or plan.state.status in ("stale", "partial")
                outcome = spec.process(plan.path, loaded, plan.targets, expected, overwrite)
                del loaded
            except OctsegError as exc:
                failures += 1
                _report_failure(spec.command, manifest, row, str(exc), seconds=time.perf_counter() - start)
                continue
            made += 1
            statuses[plan.path] = "done"
            redone = plan.state.status in ("stale", "partial")
            print(f"{outcome.line} (redone: {plan.state.reason})" if redone else outcome.line)
            manifest.append(
                {
                    **row,
                    "status": "done",
                    "reason": plan.state.reason if redone else "",
                    "seconds": round(time.perf_counter() - start, 3),
                    "bscans": outcome.bscans,
                    "outputs": [t.name for t in plan.targets],
                    "quality": outcome.quality,
                }
            )
    finally:
        loads.close()  # stop reading ahead (error, Ctrl-C)
    if len(mine) > 1 or shard.count > 1:
        tail = f", {skipped} already up to date" if skipped else ""
        where = f" (shard {shard})" if shard.count > 1 else ""
        print(f"{made} of {len(mine)} inputs {spec.done_verb}{where} in {time.perf_counter() - t0:.1f} s{tail}")
    return 1 if failures else 0


def _report_failure(command: str, manifest: Manifest, row: dict, message: str, seconds: float = 0.0) -> None:
    reason = " ".join(message.split())
    print(one_line_message(f"octseg {command}: error: {reason}"), file=sys.stderr)
    manifest.append({**row, "status": "failed", "reason": reason, "seconds": round(seconds, 3)})
