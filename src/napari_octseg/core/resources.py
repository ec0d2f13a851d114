"""How much memory this process may still use, and a refusal when a job would need more.

Linux overcommits: an allocation far beyond the machine's memory succeeds and the kernel later kills
the process, with no message. So the size of big work (decoding an image, segmenting a volume) is
estimated from its header or shape and compared with what is available *before* it starts.

Available memory is the least of: ``MemAvailable`` (``/proc/meminfo``, else psutil), the cgroup limit
minus its current use (containers, SLURM jobs) and the address-space limit (``ulimit -v``) minus the
process's current size. Where none can be found (an unknown platform) nothing is refused.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import InputError

#: Share of the available memory a single job may plan to use (the rest: the OS, napari, fragmentation).
USABLE_SHARE = 0.8


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    with contextlib.suppress(Exception):
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def _cgroup_available() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit = int(limit_text)
            if limit >= 1 << 60:  # "unlimited" in cgroup v1
                return None
            return max(0, limit - int(Path(usage_file).read_text().strip()))
    return None


def _rlimit_available() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    used = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    return max(0, soft - used)


def available_memory() -> int | None:
    """Bytes this process can still allocate without being killed, or ``None`` when unknown."""
    found = [v for v in (_meminfo_available(), _cgroup_available(), _rlimit_available()) if v is not None]
    return min(found) if found else None


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``; binary units up to TiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def require_memory(needed: int, what: str, hint: str = "", error: type[Exception] = InputError) -> None:
    """Raise ``error`` when ``needed`` bytes exceed :data:`USABLE_SHARE` of the available memory.

    Parameters
    ----------
    needed
        Estimated peak bytes of the job.
    what
        The job, as the message's subject (e.g. ``"segmenting 64 x 4096 x 4096"``).
    hint
        What the user can do, appended after ``"; "``.
    """
    available = available_memory()
    if available is None or needed <= USABLE_SHARE * available:
        return
    tail = f"; {hint}" if hint else ""
    raise error(f"{what} needs about {format_bytes(needed)} of memory, {format_bytes(available)} is available{tail}")
