"""Cohort runs: which inputs still need work, which share of them is this process's, and the run manifest.

Headless and free of torch at import time, so the CLI (and a script, or a future dock) can decide what a
batch run must do before any model is loaded.

* **Resume.** Every output folder entry made by a batch command is a set of data files plus a JSON sidecar;
  the sidecar's ``"run"`` record holds the *fingerprint* of the run that made it (model name and SHA-256 of
  the checkpoint file, the options that change the output, the input's size and modification time) and the
  size, modification time and SHA-256 of each data file. :func:`output_state` compares it with the
  fingerprint of the current run: up to date (skip), stale (redo), partial (redo) or not ours (kept unless
  ``--force``).
* **Shards.** :func:`shard_inputs` splits the sorted input list round-robin into ``N`` disjoint shares;
  :func:`launch_shard` composes ``--shard K/N`` (a SLURM array task) with ``torchrun``'s ``RANK`` /
  ``WORLD_SIZE``, and :func:`launch_device` gives each local rank its own GPU (or its share of the CPU cores).
* **Manifest.** :class:`Manifest` appends one JSON line per input to ``<out>/octseg-manifest.jsonl``: one
  ``os.write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``, so several processes (shards,
  ranks) can share one folder.
* **Prefetch.** :func:`prefetched` reads the next input in a background thread while the current one runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .core.errors import InputError

MANIFEST_NAME = "octseg-manifest.jsonl"
#: Key of the run record inside an output's JSON sidecar.
RUN_KEY = "run"
#: Version of the run record layout; a record of another version is treated as stale.
RUN_RECORD_VERSION = 1

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class Shard:
    """Share ``index`` (0-based) of ``count`` equal shares of the sorted input list."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> :class:`Shard` (``0 <= K < N``), e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise InputError(f"--shard {text!r}: expected K/N with whole numbers, e.g. 0/4") from None
    if n < 1 or not 0 <= k < n:
        raise InputError(f"--shard {text!r}: K must be in 0..N-1 (a SLURM array for N tasks is --array=0-<N-1>)")
    return Shard(k, n)


def shard_inputs(paths: Sequence[T], shard: Shard, key: Callable[[T], str] = str) -> list[T]:
    """This shard's share of ``paths``: the list sorted by ``key``, then every ``count``-th from ``index``.

    Every process given the same list and ``count`` computes the same split, so the shares of
    ``0/N`` .. ``N-1/N`` are disjoint and their union is the whole list; round-robin keeps shares of
    similar-sized files within one file of each other.
    """
    ordered = sorted(paths, key=key)
    return ordered[shard.index :: shard.count]


@dataclass(frozen=True)
class LaunchEnv:
    """What ``torchrun`` (or any launcher that sets the same variables) tells this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` from the environment (defaults: one process).

    Raises
    ------
    InputError
        If the variables are present but inconsistent (e.g. ``RANK >= WORLD_SIZE``).
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise InputError("RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE must be whole numbers") from None
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise InputError(f"inconsistent launcher environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank}")
    return LaunchEnv(rank, world, local_rank, max(local_world, 1))


def launch_shard(shard: Shard | None, env: LaunchEnv) -> Shard:
    """The share this process takes: ``--shard K/N`` split again by rank (``K*W + R`` of ``N*W``).

    Without ``--shard`` a ``torchrun`` rank takes ``RANK/WORLD_SIZE``; a SLURM array of ``torchrun`` jobs
    composes both, and every (task, rank) pair still gets a disjoint share.
    """
    base = shard or Shard()
    return Shard(base.index * env.world_size + env.rank, base.count * env.world_size)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def launch_device(requested: str, env: LaunchEnv) -> str:
    """The device one rank uses: ``cuda:LOCAL_RANK`` when CUDA exists, else the CPU with its share of cores.

    Only under a multi-process launch and for ``auto``/``cuda``; otherwise ``requested`` is returned as is.
    On the CPU the rank's torch thread count becomes ``cores // LOCAL_WORLD_SIZE`` unless
    ``OMP_NUM_THREADS`` is set (``torchrun`` sets it to 1 for several processes per node; export another
    value to override).
    """
    if not env.distributed or requested not in ("auto", "cuda"):
        return requested
    import torch

    if torch.cuda.is_available():
        return f"cuda:{env.local_rank % torch.cuda.device_count()}"
    if requested == "cuda":
        return requested  # select_device reports the absent GPU in one line
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, cpu_cores() // env.local_world_size))
    return "cpu"


# ----------------------------------------------------------------------------------- fingerprints
def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def input_identity(path: Path) -> dict[str, int]:
    """Size and modification time of an input (a folder, e.g. a DICOM series: summed over its files).

    Cheap, and changes when the input is replaced by another scan of the same name.
    """
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.rglob("*")) if p.is_file()]
        return {"bytes": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(command: str, model: Mapping[str, Any] | None, options: Mapping[str, Any], input_path: Path) -> dict:
    """What must be equal for an existing output to count as this run's: command, model, options, input."""
    return {
        "version": RUN_RECORD_VERSION,
        "command": command,
        "model": dict(model) if model is not None else None,
        "options": json.loads(json.dumps(dict(options))),  # tuples -> lists, as the sidecar will hold them
        "input": input_identity(input_path),
    }


def data_file_record(path: Path) -> dict[str, Any]:
    """Size, modification time and SHA-256 of a data file just written (before it is renamed into place)."""
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


def read_run_record(sidecar_path: Path) -> dict[str, Any] | None:
    """The ``"run"`` record of an output's JSON sidecar; ``None`` if absent, unreadable or not ours.

    The one place this module reads a sidecar, so its schema has one reader to change.
    """
    try:
        info = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = info.get(RUN_KEY) if isinstance(info, dict) else None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


# -------------------------------------------------------------------------------------- resume
@dataclass(frozen=True)
class OutputState:
    """Whether an input's outputs are ``missing``, ``current`` (skip), ``stale``/``partial`` (redo) or ``foreign``.

    ``foreign``: files octseg cannot vouch for (no run record, or a data file changed after it was
    written, e.g. labels corrected by hand); they are kept unless ``--force``.
    """

    status: str
    reason: str = ""

    @property
    def needs_work(self) -> bool:
        return self.status in ("missing", "stale", "partial")


def _data_file_matches(path: Path, recorded: Any) -> bool:
    if not isinstance(recorded, dict):
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != recorded.get("bytes"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return file_sha256(path) == recorded.get("sha256")  # copied without its times: compare the bytes


def output_state(data_paths: Sequence[Path], sidecar_path: Path, expected: Mapping[str, Any]) -> OutputState:
    """Compare an input's outputs with the ``expected`` :func:`fingerprint` of this run."""
    present = [p for p in (*data_paths, sidecar_path) if p.exists()]
    if not present:
        return OutputState("missing")
    record = read_run_record(sidecar_path)
    if record is None:
        return OutputState("foreign", f"{present[0]}: already exists and octseg has no record of making it")
    files = record["files"]
    for path in data_paths:
        if path.name not in files:
            return OutputState("partial", f"{path.name} is not in the run record")
        if not path.exists():
            return OutputState("partial", f"{path.name} is missing")
        if not _data_file_matches(path, files[path.name]):
            return OutputState("foreign", f"{path}: already exists and changed after octseg wrote it")
    mine = {k: v for k, v in record.items() if k != "files"}
    if mine != dict(expected):
        changed = sorted(k for k in set(mine) | set(expected) if mine.get(k) != expected.get(k))
        return OutputState("stale", "made with another " + ", ".join(changed))
    return OutputState("current", "up to date")


def remove_temporaries(targets: Sequence[Path]) -> list[Path]:
    """Delete the temporaries an interrupted atomic write of ``targets`` left (``.<name>.*.tmp``)."""
    removed = []
    for target in targets:
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


# ------------------------------------------------------------------------------------ manifest
class Manifest:
    """Append-only JSON-lines record of a batch run in one output folder, safe with several writers.

    Each row is one ``os.write`` to a descriptor opened with ``O_APPEND`` while holding an exclusive
    ``flock`` (where the OS has one); a row cut short by a killed writer is ended with a newline by the
    next writer, so it costs that one row and never corrupts another.
    """

    def __init__(self, folder: Path, command: str, shard: Shard | None = None) -> None:
        self.path = folder / MANIFEST_NAME
        self.command = command
        self.shard = str(shard) if shard is not None else None
        self.host = socket.gethostname()

    def append(self, row: Mapping[str, Any]) -> None:
        """Write ``row`` (plus time, command, shard, host, pid) as one JSON line."""
        full = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            **row,
            "shard": self.shard,
            "host": self.host,
            "pid": os.getpid(),
        }
        line = (json.dumps(full, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _lock(fd)
            size = os.fstat(fd).st_size
            if size and hasattr(os, "pread") and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
        finally:
            os.close(fd)  # closing releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: O_APPEND single writes only
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Every well-formed row of a manifest, in file order (a row cut short by a killed writer is left out)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def latest_rows(rows: Sequence[Mapping[str, Any]], command: str | None = None) -> dict[str, Mapping[str, Any]]:
    """The last row per input ``file`` (optionally of one ``command``): the state a manifest ends in."""
    last: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if command is None or row.get("command") == command:
            last[str(row.get("file"))] = row
    return last


# ------------------------------------------------------------------------------------ prefetch
def prefetched(items: Sequence[T], load: Callable[[T], R]) -> Generator[tuple[T, Future[R]], None, None]:
    """Yield ``(item, future of load(item))`` with the *next* item's load already running in a thread.

    At most two loads are alive (the one being used and the next), so memory stays bounded. The
    consumer calls ``future.result()``, which re-raises the loader's exception for that item only.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="octseg-prefetch") as pool:
        current: Future[R] | None = pool.submit(load, items[0])
        for i, item in enumerate(items):
            assert current is not None
            following = pool.submit(load, items[i + 1]) if i + 1 < len(items) else None
            try:
                yield item, current
            except GeneratorExit:  # the consumer stopped (error, Ctrl-C): do not read one more file
                if following is not None:
                    following.cancel()
                raise
            current = following
