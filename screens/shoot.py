"""Screenshots of the four docks at 1366x768 and 1920x1080 (not part of the project)."""
import sys, time
from pathlib import Path
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from imageio import imwrite

OUT = Path(__file__).parent
DOCKS = ["Segment layers", "Explain (Grad-CAM)", "Fine-tune on corrections", "Layer thickness"]
which = sys.argv[1] if len(sys.argv) > 1 else "duke"


def pump(seconds=0.5):
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def wait(widget, timeout=600):
    end = time.time() + timeout
    while widget.runner.running and time.time() < end:
        pump(0.2)


viewer = napari.Viewer()
docks = {}
for name in DOCKS:
    dock, widget = viewer.window.add_plugin_dock_widget("napari-octseg", name)
    docks[name] = widget
if which == "duke":
    viewer.open("../shared/data/duke_dme/Subject_07.npz", plugin="napari-octseg")
    seg = docks["Segment layers"]
    seg.image.value = viewer.layers["Subject_07.npz"]
    seg.device.value = "cpu"
    seg.start()
    wait(seg)
    print("segment:", seg.status.value)
    th = docks["Layer thickness"]
    th.source_labels.value = [lay for lay in viewer.layers if isinstance(lay, napari.layers.Labels)][-1]
    th.start()
    wait(th)
    print("thickness:", th.status.value)
elif which == "macula":
    viewer.open_sample("napari-octseg", "macula")
    th = docks["Layer thickness"]
    th.start()
    wait(th)
    print("thickness:", th.status.value, th.note.value)
elif which == "circle":
    viewer.open("../shared/data/heyex_vol/valid.vol", plugin="napari-octseg")
    seg = docks["Segment layers"]
    seg.image.value = viewer.layers["valid.vol"]
    seg.device.value = "cpu"
    seg.start()
    wait(seg)
    th = docks["Layer thickness"]
    th.source_labels.value = [lay for lay in viewer.layers if isinstance(lay, napari.layers.Labels)][-1]
    th.start()
    wait(th)
    print("thickness:", th.status.value, th.note.value)
viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
for w, h in ((1366, 768), (1920, 1080)):
    viewer.window.resize(w, h)
    pump(1.5)
    img = viewer.screenshot(canvas_only=False)
    imwrite(OUT / f"{which}_{w}x{h}.png", img)
    print(w, h, img.shape)
    for name, widget in docks.items():
        print("  ", name, "dock height", widget.native.height(), "content", widget.content().sizeHint().height())
from qtpy.QtWidgets import QDockWidget
viewer.window.resize(1366, 768)
pump(1.0)
for name, widget in docks.items():
    dock = widget.native.parent()
    while not isinstance(dock, QDockWidget):
        dock = dock.parent()
    dock.raise_()
    pump(1.0)
    imwrite(OUT / f"{which}_tab_{name.split()[0]}_1366x768.png", viewer.screenshot(canvas_only=False))
    sa = widget.native
    sa.verticalScrollBar().setValue(sa.verticalScrollBar().maximum())
    pump(1.0)
    imwrite(OUT / f"{which}_tab_{name.split()[0]}_bottom_1366x768.png", viewer.screenshot(canvas_only=False))
viewer.close()
