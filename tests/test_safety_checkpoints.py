"""Issue 16, family 2: model files that are valid pickles of plain data but hostile or malformed.

Each is refused with one CheckpointError line before any network is built or any input is read.
"""

from __future__ import annotations

import copy
import math
import zipfile

import pytest
import torch
from _safety_helpers import one_error_line, run_octseg

from napari_octseg.core.errors import CheckpointError
from napari_octseg.models import load_checkpoint
from napari_octseg.models.checkpoint import checkpoint_from_dict
from napari_octseg.models.validate import expected_state

GB = 1 << 30


@pytest.fixture
def payload(tiny_checkpoint):
    return torch.load(tiny_checkpoint, weights_only=True)


def _mutated(payload, edit):
    p = copy.deepcopy(payload)
    edit(p)
    return p


def _set(path, value):
    def edit(p):
        node = p
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _nested(depth):
    node: dict = {}
    for _ in range(depth):
        node = {"x": node}
    return node


CASES = {
    "widths 8000": (_set(("config", "widths"), [8000, 8000]), "every config width must be within 1..1024"),
    "depth 16": (_set(("config", "widths"), [4] * 16), "widths must be a list of 1..7 levels"),
    "widths a string": (_set(("config", "widths"), "4,8"), "widths must be a list"),
    "n_classes 0": (_set(("config", "n_classes"), 0), "n_classes must be within 2..64"),
    "n_classes a float": (_set(("config", "n_classes"), 10.0), "n_classes must be an integer"),
    "in_channels 3": (_set(("config", "in_channels"), 3), "in_channels must be within 1..1"),
    "dropout 2": (_set(("config", "dropout"), 2.0), "dropout must be a number in"),
    "unknown config field": (_set(("config", "kernel_size"), 99), "config has unknown fields"),
    "config a list": (_set(("config",), [1, 2]), "config must be a dict"),
    "normalization an int": (_set(("normalization",), 5), "normalization must be a dict"),
    "normalization low > high": (
        _set(("normalization",), {"method": "percentile", "low": 99.0, "high": 1.0}),
        "low (99.0) must be below high",
    ),
    "normalization NaN": (
        _set(("normalization",), {"method": "percentile", "low": math.nan, "high": 99.0}),
        "normalization low must be a percentile",
    ),
    "normalization method": (_set(("normalization",), {"method": "zscore"}), "unknown intensity normalisation"),
    "class_names an int": (_set(("class_names",), 5), "class_names must be a list of strings"),
    "class_names too few": (_set(("class_names",), ["a", "b"]), "2 class names for a network with 10 outputs"),
    "class_names duplicated": (_set(("class_names",), ["a"] * 10), "class names must be distinct"),
    "training a list": (_set(("training",), [1, 2, 3]), "training must be a dict"),
    "training nested 100 deep": (_set(("training",), _nested(100)), "nested deeper than 16"),
    "training with a big tensor": (
        _set(("training",), {"t": torch.zeros(1 << 19)}),
        "training record holds over",
    ),
    "version a string": (_set(("format_version",), "1"), "format_version must be an integer; got str '1'"),
    "version 2": (_set(("format_version",), 2), "checkpoint format version 2 is not supported"),
    "NaN weights": (
        lambda p: p["state_dict"]["classifier.weight"].fill_(math.nan),
        "classifier.weight holds NaN or infinite values",
    ),
    "1e300 weights (float64)": (
        lambda p: p["state_dict"].__setitem__(
            "classifier.weight", torch.full_like(p["state_dict"]["classifier.weight"], 1e300, dtype=torch.float64)
        ),
        "holds NaN or infinite values",
    ),
    "1e30 weights": (lambda p: p["state_dict"]["classifier.bias"].fill_(1e30), "holds absurd values"),
    "int weights": (
        lambda p: p["state_dict"].__setitem__(
            "classifier.weight", p["state_dict"]["classifier.weight"].to(torch.int32)
        ),
        "weights must be floating point",
    ),
    "negative BatchNorm variance": (
        lambda p: p["state_dict"]["encoder.0.1.running_var"].fill_(-1.0),
        "negative BatchNorm variances",
    ),
    "wrong tensor shape": (
        lambda p: p["state_dict"].__setitem__("classifier.weight", torch.zeros(10, 4, 3, 3)),
        "the config implies (10, 4, 1, 1)",
    ),
    "missing tensor": (lambda p: p["state_dict"].pop("classifier.bias"), "missing 'classifier.bias'"),
    "extra tensor": (lambda p: p["state_dict"].__setitem__("evil", torch.zeros(1)), "unexpected 'evil'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_or_malformed_checkpoint_is_one_checkpoint_error(payload, tmp_path, case):
    edit, message = CASES[case]
    path = tmp_path / "bad.pt"
    torch.save(_mutated(payload, edit), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path)), text
    assert message in text, text


def test_expected_shapes_come_from_the_meta_device_without_memory():
    from napari_octseg.models import SegNetConfig

    shapes = expected_state(SegNetConfig(widths=(1024,) * 7))
    assert shapes["encoder.6.0.weight"][0] == (1024, 1024, 3, 3)
    assert all(dtype in (torch.float32, torch.int64) for _, dtype in shapes.values())


def test_huge_widths_are_refused_without_allocating(payload, tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(_mutated(payload, _set(("config", "widths"), [8000, 8000])), path)
    assert path.stat().st_size < 1 << 20
    rc, _, err, rss = run_octseg("segment", tmp_path / "nothing.npy", "--model", path, "--out", tmp_path / "out")
    assert rc == 1 and "every config width must be within 1..1024" in one_error_line(err, "octseg segment: error:")
    assert rss < GB
    assert not (tmp_path / "out").exists()


def test_zip_member_claiming_a_huge_inflated_size_is_refused_before_torch_load(tiny_checkpoint, tmp_path):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(tiny_checkpoint) as src, zipfile.ZipFile(bomb, "w") as dst:
        prefix = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            dst.writestr(info, src.read(info))
    # one more member, deflated: 256 MiB of zeros streamed into ~250 KB
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as dst:
        with dst.open(f"{prefix}/data/1000", "w", force_zip64=True) as fh:
            block = bytes(1 << 22)
            for _ in range(64):
                fh.write(block)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(CheckpointError, match="a decompression bomb") as info:
        load_checkpoint(bomb)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_a_torch_zip_is_one_line(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02}q\x00." * 10)
    with pytest.raises(CheckpointError, match="not a torch zip archive"):
        load_checkpoint(path)


def test_a_valid_checkpoint_still_loads(payload, tiny_checkpoint):
    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.config.widths == (4, 8, 8)
    assert checkpoint_from_dict(payload).n_classes == 10


def test_bundled_model_passes_validation():
    from napari_octseg.models.registry import load_model

    assert load_model(None).n_classes == 10
