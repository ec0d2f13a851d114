"""The ``octseg`` command: the package's functions, headless, for batch work.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser whose
default ``func`` runs the command and returns an exit code. User-facing problems
(:class:`~napari_octseg.core.errors.OctsegError`, and ``OSError`` such as an output folder that cannot be
created) print one line on stderr and exit 1; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import OctsegError

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
    """Entry point of ``octseg``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OctsegError as exc:
        print(f"octseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"octseg {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"octseg {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be created, a full disk...: the user's to fix, not a bug
        print(f"octseg {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
        return 1


def _os_error_text(exc: OSError) -> str:
    """One line naming the file and the system's reason, e.g. ``out/x.tif: No space left on device``."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
