"""Small structural promises: build_model dispatches on the architecture; every subcommand is registered."""

from __future__ import annotations

import pytest

from napari_octseg import cli
from napari_octseg.core.errors import CheckpointError
from napari_octseg.models import SegNet, SegNetConfig, build_model, checkpoint_from_dict, save_checkpoint


def test_build_model_dispatches_on_the_architecture(tmp_path):
    config = SegNetConfig(widths=(4, 8)).to_dict()
    assert config["architecture"] == "segnet"
    assert isinstance(build_model(config), SegNet)
    without = {k: v for k, v in config.items() if k != "architecture"}
    assert isinstance(build_model(without), SegNet)  # older checkpoints: segnet by default
    with pytest.raises(ValueError, match="unknown architecture 'unet'"):
        build_model({**config, "architecture": "unet"})
    import torch

    payload = torch.load(save_checkpoint(tmp_path / "m.pt", SegNet(SegNetConfig(widths=(4, 8)))), weights_only=True)
    payload["config"]["architecture"] = "unet"
    with pytest.raises(CheckpointError, match="unknown architecture"):
        checkpoint_from_dict(payload)


def test_every_subcommand_is_registered():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == list(cli.COMMANDS)


def test_a_missing_subcommand_module_is_an_error_not_a_silent_skip(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
