"""Open a napari viewer with OCT layers and the plugin's docks (used by ``octseg view``)."""

from __future__ import annotations

import sys

import napari

PLUGIN = "napari-octseg"
WIDGET = "Segment layers"


def open_viewer(layers: list, dock_widget: bool = True, run: bool = True) -> napari.Viewer:
    """Show ``layers`` (napari layer data tuples) in a new viewer with µm scale bar and the segment dock."""
    from .reader_choice import prefer_plugin_for_own_files

    prefer_plugin_for_own_files()
    viewer = napari.Viewer(title="napari-octseg")
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.scale_bar.visible = True
    if dock_widget:
        try:
            viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        except Exception as exc:  # the viewer is still useful without the dock
            print(
                f"octseg view: note: the '{WIDGET}' widget is not available ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )
    if run:
        napari.run()
    return viewer
