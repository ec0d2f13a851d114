"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one intact.

Temporaries are named ``.<target name>.<pid>-<random>.octseg-tmp`` in the target's folder. A process
killed by a signal it cannot catch (SIGKILL, power loss) leaves its temporary behind; the name can never
be mistaken for an output, and the next write to the same target removes every such temporary whose
process is gone. SIGTERM (``timeout``, SLURM, ``docker stop``) is turned into the same clean exit as
Ctrl-C by :func:`install_termination_handler`, so the temporaries are removed as on an error.

Each temporary is flushed to disk (``fsync``) before it is renamed onto its target. Without ``overwrite``
the rename does not clobber: the temporary is hard-linked onto the target, which fails if another
process created the target in the meantime (two runs writing the same output: one wins, the other gets
a one-line error).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OctsegError

#: Suffix of every temporary written by :func:`atomic_path`.
TEMP_SUFFIX = ".octseg-tmp"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temporaries removed) runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


def install_termination_handler() -> None:
    """Make SIGTERM (and SIGHUP) raise :class:`Terminated`, and SIGINT ``KeyboardInterrupt``, in the main thread.

    SIGINT keeps being ignored where the caller chose so (``nohup``). A no-op outside the main thread.
    """
    with contextlib.suppress(ValueError, OSError, TypeError):
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        with contextlib.suppress(ValueError, OSError):  # not the main thread / not supported
            signal.signal(sig, _raise_terminated)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (after links and ``..``; hard links count)."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def refuse_output_is_input(
    outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None]
) -> None:
    """Raise if an output path resolves to one of the inputs or to another output.

    Raises
    ------
    OctsegError
        ``"<out>: is also the input <in>; choose another output"``.
    """
    outs = [Path(o) for o in outputs if o is not None]
    ins = [Path(i) for i in inputs if i is not None]
    for k, out in enumerate(outs):
        for other in ins:
            if same_file(out, other):
                raise OctsegError(f"{out}: is also the input {other}; refusing to overwrite it (choose another output)")
        for other in outs[k + 1 :]:
            if same_file(out, other):
                raise OctsegError(f"{out}: given twice as an output ({other}); choose distinct outputs")


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to overwrite an existing file unless ``force``; return the path."""
    path = Path(path)
    if path.exists() and not force:
        raise OctsegError(f"{path}: already exists (use --force to overwrite)")
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` left by processes that no longer run; return them."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)-[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / file system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the complete temporary onto ``path``; without ``overwrite`` never replace an existing file."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OctsegError(f"{path}: was created by another process meanwhile; nothing was overwritten") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (FAT, some network shares): reserve the name exclusively, then replace.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise OctsegError(f"{path}: was created by another process meanwhile; nothing was overwritten") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A fresh temporary for ``path`` (removed on any exit unless it was published)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _finish(tmp: Path) -> None:
    # mkstemp-like 0600 temporaries; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    _fsync_file(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; move it onto ``path`` on success.

    On any exception (Ctrl-C and SIGTERM included) the temporary file is removed and ``path`` is left
    untouched. The temporary is fsync'ed before the rename. With ``overwrite=False`` an existing
    ``path`` (e.g. written by a concurrent run) is never replaced: :class:`OctsegError` instead.
    """
    path = Path(path)
    with _temporary(path) as tmp:
        yield tmp
        _finish(tmp)
        _publish(tmp, path, overwrite)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike, overwrite: bool = True) -> Iterator[tuple[Path, ...]]:
    """Yield one temporary path per target; move them onto their targets only if the block succeeds.

    Every temporary is complete (and fsync'ed) before any is moved, so a failure while writing any of
    them (full disk, Ctrl-C, SIGTERM) leaves all the targets as they were: files that ``--force`` was
    about to replace stay intact, and no target is left paired with a stale or missing companion.
    Without ``overwrite``, a target created meanwhile by another process stops the move, and the
    targets already moved by this call are removed again.
    """
    targets = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack:
        temporaries = tuple(stack.enter_context(_temporary(p)) for p in targets)
        yield temporaries
        for tmp in temporaries:
            _finish(tmp)
        published: list[Path] = []
        try:
            for tmp, target in zip(temporaries, targets):
                _publish(tmp, target, overwrite)
                published.append(target)
        except BaseException:
            if not overwrite:
                for target in published:
                    with contextlib.suppress(OSError):
                        target.unlink()
            raise
    for folder in {t.parent for t in targets}:
        _fsync_dir(folder)
