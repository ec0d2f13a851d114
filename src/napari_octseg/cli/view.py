"""``octseg view [FILE...]``: open napari with OCT files (default: the synthetic sample) and the segment widget."""

from __future__ import annotations

import argparse

from ..core.errors import OctsegError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        help="open napari with OCT files and the segmentation widget",
        description="Open napari with the given OCT files (default: the synthetic "
        "sample volume and its ground truth) and dock the 'Segment layers' widget.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="OCT file(s) or folder(s); none: the sample volume")
    parser.add_argument("--no-widget", action="store_true", help="do not dock the segmentation widget")
    parser.set_defaults(func=run)


def load_layers(files: list[str]) -> list:
    """Layer data tuples for ``files`` (all read before napari opens), or the sample volume."""
    from ..io import read

    if not files:
        from .._napari.sample import make_sample_macula

        return make_sample_macula()
    from .._napari.reader import volume_layers

    layers = []
    for path in files:
        layers.extend(volume_layers(read(path), path.rstrip("/").split("/")[-1] or path))
    return layers


def run(args: argparse.Namespace) -> int:
    try:
        from .._napari.launch import open_viewer
    except ImportError:
        raise OctsegError("napari is not installed; install napari-octseg[napari]") from None
    open_viewer(load_layers(list(args.files)), dock_widget=not args.no_widget)
    return 0


__all__ = ["load_layers", "register", "run"]
