"""The ``octseg`` command: the package's functions, headless, for batch work.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser whose
default ``func`` runs the command and returns an exit code. User-facing problems
(:class:`~napari_octseg.core.errors.OctsegError`, and ``OSError`` such as an output folder that cannot be
created) print one line on stderr and exit 1; nothing prints a traceback. Control characters in a
message (a file name holding a newline) are escaped, so the error stays one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.atomic import Terminated, install_termination_handler
from ..core.errors import OctsegError, one_line_message

#: Subcommand modules, in the order ``octseg --help`` lists them.
COMMANDS = ("info", "view", "segment", "gradcam", "finetune", "thickness", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="octseg",
        description="Retinal OCT layer segmentation, Grad-CAM explanations, fine-tuning and thickness.",
    )
    parser.add_argument("--version", action="version", version=f"napari-octseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        # Every listed subcommand ships with the package: a missing one is a broken install, said loudly.
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``octseg``; returns the process exit code.

    Ctrl-C and SIGTERM (handled first thing, so also while the heavy modules load) end the command
    with one line and exit 130 / 143; every temporary file is removed on the way out.
    """
    install_termination_handler()
    _tolerant_streams()
    command = "octseg"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"octseg {args.command}"
        return int(args.func(args) or 0)
    except OctsegError as exc:
        _error(f"{command}: error: {exc}")
        return 1
    except Terminated:
        _error(f"{command}: terminated; no partial output was kept")
        return 143
    except KeyboardInterrupt:
        _error(f"{command}: interrupted; no partial output was kept")
        return 130
    except MemoryError:
        _error(f"{command}: error: out of memory")
        return 1
    except OSError as exc:  # a folder that cannot be created, a full disk...: the user's to fix, not a bug
        _error(f"{command}: error: {_os_error_text(exc)}")
        return 1


def _tolerant_streams() -> None:
    """Never fail on printing a file name the terminal's encoding cannot show (e.g. non-UTF-8 bytes)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")


def _error(line: str) -> None:
    """Print one line on stderr: control characters (a newline in a file name...) are escaped."""
    try:
        print(one_line_message(line), file=sys.stderr)
    except (OSError, ValueError):  # stderr closed or broken: the exit code still tells
        pass


def _os_error_text(exc: OSError) -> str:
    """One line naming the file and the system's reason, e.g. ``out/x.tif: No space left on device``."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
