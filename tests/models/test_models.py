"""SegNet forward/backward, checkpoint round trip, and checkpoints as untrusted input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from napari_octseg.core.errors import CheckpointError, InputError
from napari_octseg.models import (
    FORMAT_VERSION,
    PRESETS,
    SegNet,
    SegNetConfig,
    load_checkpoint,
    normalize_bscans,
    save_checkpoint,
    select_device,
)


def small() -> SegNet:
    torch.manual_seed(0)
    return SegNet(SegNetConfig(widths=(4, 8, 8, 16, 16)))


@pytest.mark.parametrize("shape", [(64, 64), (61, 77), (33, 128)])
def test_forward_any_size_returns_logits_at_input_size(shape):
    model = small().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, *shape))
    assert out.shape == (2, 10, *shape)
    assert torch.isfinite(out).all()


def test_backward_reaches_every_parameter():
    model = small()
    out = model(torch.rand(2, 1, 64, 64))
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unpooling_uses_the_encoder_indices():
    """Decoder output depends on where the maxima were, not only on their values."""
    model = small().eval()
    x = torch.zeros(1, 1, 32, 32)
    x[..., 5, 5] = 1.0
    y = torch.zeros(1, 1, 32, 32)
    y[..., 4, 4] = 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(y))


def test_paper_preset_has_the_papers_widths():
    assert PRESETS["paper"].widths == (64, 128, 256, 512, 512)
    layers = SegNet(PRESETS["light"]).gradcam_layers()
    assert {"decoder", "final", "decoder.0"} <= set(layers)
    assert isinstance(layers["final"], torch.nn.Conv2d) and layers["final"].kernel_size == (1, 1)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = small().eval()
    path = save_checkpoint(tmp_path / "m.pt", model, training={"epochs": 3})
    loaded = load_checkpoint(path)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.training == {"epochs": 3}
    assert loaded.class_names[1] == "NFL" and loaded.n_classes == 10
    assert not loaded.model.training


def test_checkpoint_with_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"format_version": FORMAT_VERSION, "state_dict": Payload()}, bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused for safety|not a valid"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)


@pytest.mark.parametrize("cut", [0, 10, 200, 0.5])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    path = save_checkpoint(tmp_path / "m.pt", small())
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def _resave(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_other_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", small())
    _resave(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)


def test_other_number_of_classes_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", small())
    _resave(path, class_names=["a", "b", "c"])
    with pytest.raises(CheckpointError, match="class names"):
        load_checkpoint(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", small())
    other = SegNet(SegNetConfig(widths=(8, 8, 8, 16, 16)))
    _resave(path, state_dict=other.state_dict())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_missing_file_and_foreign_bytes(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "absent.pt")
    foreign = tmp_path / "x.pt"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError):
        load_checkpoint(foreign)


def test_normalisation_maps_percentiles_to_unit_range_and_rejects_nan():
    b = np.linspace(0, 255, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    out = normalize_bscans(b)
    assert out.dtype == np.float32 and out.shape == b.shape
    assert out.min() == 0.0 and out.max() == 1.0
    b[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        normalize_bscans(b)


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(InputError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="not available"):
            select_device("cuda")


def test_only_a_segnet_is_saved_and_nothing_is_written_otherwise(tmp_path):
    from napari_octseg.models import save_checkpoint

    with pytest.raises(TypeError, match="only a SegNet"):
        save_checkpoint(tmp_path / "conv.pt", torch.nn.Conv2d(1, 1, 1))
    assert list(tmp_path.iterdir()) == []


def test_unpooling_matches_torch_and_segmenting_imports_no_sympy():
    """SegNet's unpooling is nn.MaxUnpool2d(2, 2) without its Python-side size check, whose first call
    imports sympy (about a second of every command's start-up)."""
    import subprocess
    import sys

    from napari_octseg.models.segnet import _MaxUnpool2x2

    ref = torch.nn.MaxUnpool2d(2, 2)
    for shape, size in [((2, 3, 8, 10), None), ((1, 4, 9, 7), (9, 7)), ((1, 2, 6, 6), (6, 6))]:
        pooled, idx = torch.nn.functional.max_pool2d(torch.randn(shape), 2, 2, return_indices=True)
        assert torch.equal(_MaxUnpool2x2()(pooled, idx, size), ref(pooled, idx, output_size=size))
    code = (
        "import sys, numpy as np, torch\n"
        "from napari_octseg.models import SegNet, SegNetConfig, LoadedModel\n"
        "from napari_octseg.core.progress import run_generator\n"
        "from napari_octseg.inference import segment\n"
        "net = SegNet(SegNetConfig(widths=(4, 8, 8))).eval()\n"
        "run_generator(segment(np.random.rand(2, 40, 36).astype(np.float32), LoadedModel(model=net), device='cpu'))\n"
        "print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_inference_network_splits_decoder_inputs_with_the_same_output():
    """inference_network replaces each decoder level's conv over cat([unpooled, skip]) by two convs whose
    outputs are added: the same logits (to float rounding), the caller's network untouched."""
    from napari_octseg.models.runtime import inference_network
    from napari_octseg.models.segnet import DecoderBlock, SplitInputConv

    torch.manual_seed(0)
    net = SegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    fast = inference_network(net, torch.device("cpu"))
    assert all(isinstance(b, DecoderBlock) and isinstance(b[0], SplitInputConv) for b in fast.decoder)
    assert all(isinstance(b[0], torch.nn.Conv2d) for b in net.decoder)
    x = torch.rand(3, 1, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
    split = fast.decoder[1][0]
    assert split.weight.shape == (8, 16, 3, 3)
    with pytest.raises(ValueError):
        SplitInputConv(torch.nn.Conv2d(4, 4, 3), 4)
