"""Run configuration: one validated, flat dataclass, loaded from a profile YAML plus overrides.

A profile (``thadcr/profiles/<name>.yaml``) fixes every field a run needs; ``key=value``
overrides change single fields. An unknown key anywhere is an error that lists the valid keys.

Every value is checked against its field's type, read from the annotations (``int``, ``float``,
``bool``, ``str``, ``list[int]``, ``X | None``), and against the range or choices in the field's
metadata; a bad value is a `ConfigError` naming the key, the value and what is allowed. Ints are
accepted for float fields (and stored as floats); booleans are not numbers; ``None`` (YAML
``null``) only where the type says ``| None``. Override values are read as YAML, so ``true`` /
``false`` and YAML's other spellings ``yes``/``no`` and ``on``/``off`` are booleans; for a text
field, a value YAML would read as a number, a date or a boolean keeps the text given
(``cache_dir=2024`` is the folder "2024").

The fields have no defaults: a run's settings come from one profile, which must set every key, so
each value is written in one place. (Defaults beside the profiles had drifted to match neither, and
a Config built without a profile would have been a silent mix.) A config recorded before a key
existed (in an older checkpoint or metrics.json) is read with `KEYS_ADDED`: the value that keeps
the behaviour from before that key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from thadcr.errors import UsageError
from thadcr.files import atomic_write_bytes

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class VariantParts:
    """What one model of the paper's Tables 1-3 is made of (sections 2.2-2.4, 3.2 and Table 3).

    The similarity S is the sum of the terms the variant uses (section 2.4, after Eq. 5), in this
    order: ``tha`` S_THA (Eq. 1, 3 levels, 2 directions); ``dp`` S_DP, the cosine of the projected
    pooled features ā and t̄; ``factors`` the K latent factors' similarity: S_DCR (Eq. 4) with
    ``ca`` (the confidence-aware weights g_i), the unweighted sum of the K factor cosines without
    it. The loss is L_S (NT-Xent, Eq. 5), plus alpha L_D with ``loss_d``, plus beta L_A with
    ``loss_a``.
    """

    name: str
    tha: bool = False
    dp: bool = False
    factors: bool = False
    ca: bool = False
    loss_d: bool = False
    loss_a: bool = False

    def __post_init__(self) -> None:
        if (self.ca or self.loss_d or self.loss_a) and not self.factors:
            raise ValueError(f"variant {self.name}: CA, L_D and L_A act on the latent factors")
        if not (self.tha or self.dp or self.factors):
            raise ValueError(f"variant {self.name}: the similarity needs at least one term")

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the terms of S in the order they are added, e.g. ("S_THA", "S_DCR").

        The order is S_THA, S_DP, then S_DCR (with CA) or S_factors (the unweighted factor cosines)."""
        named = (("S_THA", self.tha), ("S_DP", self.dp), ("S_DCR", self.factors and self.ca),
                 ("S_factors", self.factors and not self.ca))  # fmt: skip
        return tuple(name for name, used in named if used)

    @property
    def losses(self) -> tuple[str, ...]:
        """Names of the terms of the training loss, e.g. ("L_S", "L_D").

        L_S always, then L_D and L_A where the variant uses them."""
        return ("L_S",) + ("L_D",) * self.loss_d + ("L_A",) * self.loss_a


# The variants of Tables 1-3 (paper section 3.2: "THA", "THA+DP", "DCR", "THA+DCR"; Table 3: DP (HTSAT),
# + L_D, + L_D + L_A, and the full DCR, which adds CA). The model (`thadcr.model.retrieval`), the plan
# (`thadcr.experiments.plan`) and the tests read which parts a variant has from here.
VARIANT_PARTS: dict[str, VariantParts] = {parts.name: parts for parts in (
    VariantParts("DP", dp=True),
    VariantParts("THA", tha=True),
    VariantParts("THA+DP", tha=True, dp=True),
    VariantParts("DCR", factors=True, ca=True, loss_d=True, loss_a=True),
    VariantParts("THA+DCR", tha=True, factors=True, ca=True, loss_d=True, loss_a=True),
    VariantParts("DP+LD", factors=True, loss_d=True),  # Table 3's "DP(HTSAT) + L_D": factors, no CA
    VariantParts("DP+LD+LA", factors=True, loss_d=True, loss_a=True),
)}  # fmt: skip
VARIANTS = tuple(VARIANT_PARTS)
SPLITS = ("train", "val", "test")  # the splits of a data set, in every layout (`thadcr.data.readers`)
AUDIO_ENCODERS = ("htsat", "resnet38")
LAYOUTS = ("clotho", "audiocaps")
MODEL_SELECTIONS = ("best_val", "last")
NUMERICS_MODES = ("portable", "native")  # thadcr.numerics.MODES
DEVICE_TEXT = "'auto' or a torch device (cpu, cuda, cuda:1, mps, ...)"

# Keys Config gained after runs had been recorded, with the value that keeps the behaviour from
# before the key (git history of this file). A recorded config without such a key reads as this
# value (`from_dict`, `thadcr.experiments.plan.stale_settings`); any other missing key is an error.
KEYS_ADDED: dict[str, Any] = {
    "resnet38_dropout": True,  # ResNet38 kept PANNs' dropouts
    "tha_max_audio_tokens": 0,  # THA attended every audio token
    "factor_reduce": "sum",  # Eq. 4's sum over the K factors
    "specaug_time_masks": 0,  # no SpecAugment
    "specaug_time_width": 64,
    "specaug_freq_masks": 0,
    "specaug_freq_width": 8,
    "model_selection": "best_val",  # the best-validation epoch was tested
    "audio_frozen": False,  # the audio encoder was fine-tuned
    "eval_fold_clips": 0,  # each split was one gallery
    "val_every": 1,  # every epoch was validated
    "numerics": "native",  # the CPU's own kernels (thadcr.numerics)
}


class ConfigError(UsageError):
    """A configuration key or value is invalid; the message says which and what to do."""


def _key(help: str, *, choices: tuple = (), ge: float | None = None, gt: float | None = None,
         le: float | None = None, length: int | None = None, device: bool = False) -> Any:
    """A Config field without a default; its help and allowed values travel in its metadata:
    ``choices``; ``ge``/``gt``/``le`` bounds (of each item for a list); a list's ``length``;
    ``device``: 'auto' or a string torch.device accepts."""  # fmt: skip
    return field(metadata={"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le,
                           "length": length, "device": device})  # fmt: skip


@dataclass
class Config:
    """Every setting of one training/evaluation run (see the profiles for the values used)."""

    # --- model (paper section 2) ---
    variant: str = _key("the model of Tables 1-3 (THA: Eq. 1; DCR: Eq. 2-4; DP: cosine of the pooled features)",
                        choices=VARIANTS)
    audio_encoder: str = _key("audio encoder", choices=AUDIO_ENCODERS)
    htsat_size: str = _key("HTS-AT size: paper (AudioSet architecture) or tiny", choices=("paper", "tiny"))
    audio_frozen: bool = _key("keep the pretrained audio encoder fixed (eval mode) and train the rest on its "
                              "features, computed once per split and cached (thadcr.run.features)")
    audio_checkpoint: str | None = _key("official HTS-AT / PANNs checkpoint file; null: random initialisation")
    resnet38_width: float = _key("channel multiplier of ResNet38 (1.0 = the published PANNs model)", gt=0)
    resnet38_dropout: bool = _key("PANNs' dropouts in ResNet38 (training only)")
    text_model: str | None = _key("hub name or local folder of a BERT-like model; null: the wheel's MiniLM")
    text_layers: list[int] = _key("text hidden states of the 3 THA levels (0 = embeddings)", ge=0, length=3)
    text_trainable_layers: int = _key("-1: fine-tune all; 0: frozen (features cached); n: the last n blocks", ge=-1)
    joint_dim: int = _key("D: THA joint dimension and DP projection; each DCR factor has D // K dims", ge=1)
    n_factors: int = _key("K, the number of DCR factors", ge=1)
    alpha: float = _key("weight of L_D", ge=0)
    beta: float = _key("weight of L_A", ge=0)
    lam: float = _key("lambda of Eq. 1", ge=0)
    tau: float = _key("temperature of Eq. 5", gt=0)
    tha_reduce: str = _key("THA over tokens (the paper sums)", choices=("mean", "sum"))
    tha_max_audio_tokens: int = _key("0: every audio token; n: pool each level's grid 2x2 until <= n", ge=0)
    factor_reduce: str = _key("over the K factor cosines: sum (Eq. 4) or mean", choices=("sum", "mean"))
    same_clip_positives: bool = _key("captions of one clip in a batch count as positives in Eq. 5")
    # --- data ---
    data_root: str = _key("data set folder")
    layout: str = _key("on-disk layout of data_root", choices=LAYOUTS)
    audio_pattern: str = _key("AudioCaps audio file name pattern")
    clip_seconds: float = _key("clip length in seconds (cropped or padded)", gt=0)
    sample_rate: int = _key("audio sample rate in Hz", ge=1)
    max_missing_share: float = _key("refuse to start when a larger share of a split's audio is missing", ge=0, le=1)
    cache_dir: str | None = _key("log-mel cache folder; null: <data_root>/.cache")
    num_workers: int = _key("data-loader worker processes (0: the main process)", ge=0)
    specaug_time_masks: int = _key("SpecAugment in training: stripes of frames (0: none) ...", ge=0)
    specaug_time_width: int = _key("... each 0 to width-1 frames wide", ge=0)
    specaug_freq_masks: int = _key("stripes of mel bins (0: none) ...", ge=0)
    specaug_freq_width: int = _key("... each 0 to width-1 bins wide", ge=0)
    # --- optimisation (ref [8] pipeline) ---
    epochs: int = _key("training epochs", ge=1)
    batch_size: int = _key("clips per global batch (a contrastive loss needs 2)", ge=2)
    lr: float = _key("Adam learning rate", gt=0)
    lr_step: int = _key("StepLR: epochs between decays", ge=1)
    lr_gamma: float = _key("StepLR: decay factor", gt=0, le=1)
    grad_clip: float = _key("gradient-norm clipping", gt=0)
    seed: int = _key("random seed", ge=0)
    device: str = _key("where to run", device=True)
    amp: bool = _key("mixed precision, used on CUDA only")
    eval_fold_clips: int = _key("0: a split is one gallery; n: disjoint folds of n clips (in file order; a split "
                                "of at most n clips is one) with their captions, metrics averaged over folds "
                                "(MS-COCO 1K style)", ge=0)
    eval_batch: int = _key("clips per batch when encoding for evaluation", ge=1)
    max_steps_per_epoch: int = _key("0: full epochs; n: stop each epoch after n steps", ge=0)
    val_every: int = _key("validate after every n-th epoch and after the last (model_selection=best_val "
                          "chooses among the validated epochs)", ge=1)
    model_selection: str = _key("test the epoch of best validation t2a R@1+R@5+R@10, or the last",
                                choices=MODEL_SELECTIONS)
    numerics: str = _key("portable: the same bits on any x86-64 CPU (slower; thadcr.numerics); native: the "
                         "CPU's fastest kernels", choices=NUMERICS_MODES)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check (and convert: int -> float) every value, then the rules between keys."""
        for name in _FIELDS:
            setattr(self, name, _checked(name, getattr(self, name)))
        if self.joint_dim < self.n_factors:
            raise ConfigError(f"joint_dim={self.joint_dim} must be at least n_factors={self.n_factors}")

    @property
    def parts(self) -> VariantParts:
        """Which parts of the method the run's variant uses (`VARIANT_PARTS`)."""
        return VARIANT_PARTS[self.variant]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        return from_dict({**self.to_dict(), **changes})


_FIELDS = {f.name: f for f in fields(Config)}
_TYPES = typing.get_type_hints(Config)
_INVALID = object()


def _base_type(name: str) -> tuple[Any, bool]:
    """(the field's type without None, whether it is Optional)."""
    hint = _TYPES[name]
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _conform(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (an int is a float, a bool is no number), or _INVALID."""
    if kind is bool:
        return value if isinstance(value, bool) else _INVALID
    if kind is str:
        return value if isinstance(value, str) else _INVALID
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _INVALID
        if kind is int:
            return value if isinstance(value, int) else _INVALID
        return float(value) if math.isfinite(value) else _INVALID
    if typing.get_origin(kind) is list and isinstance(value, list):
        items = [_conform(item, typing.get_args(kind)[0]) for item in value]
        return _INVALID if any(item is _INVALID for item in items) else items
    return _INVALID


def _in_range(value: Any, meta: dict[str, Any]) -> bool:
    if meta["choices"]:
        return value in meta["choices"]
    if meta["device"]:
        return _is_device(value)
    items = value if isinstance(value, list) else [value]
    if meta["length"] is not None and len(items) != meta["length"]:
        return False
    ge, gt, le = meta["ge"], meta["gt"], meta["le"]
    return all((ge is None or v >= ge) and (gt is None or v > gt) and (le is None or v <= le) for v in items)


def _is_device(value: str) -> bool:
    if value == "auto":
        return True
    import torch  # only for an explicit device: the profiles say "auto"

    try:
        torch.device(value)
    except RuntimeError:
        return False
    return True


def _checked(name: str, value: Any) -> Any:
    """``value`` converted to field ``name``'s type, or a ConfigError naming key, value and what is allowed."""
    kind, optional = _base_type(name)
    meta = _FIELDS[name].metadata
    if value is None and optional:
        return None
    typed = _INVALID if value is None else _conform(value, kind)
    if typed is not _INVALID and _in_range(typed, meta):
        return typed
    if meta["choices"]:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, meta['choices']))}")
    raise ConfigError(f"{name} must be {allowed(name)}, got {value!r}")


def _bounds(meta: dict[str, Any], integer: bool) -> str:
    ge, gt, le = meta["ge"], meta["gt"], meta["le"]
    if le is not None:
        return f"in {'[' if gt is None else '('}{gt if ge is None else ge:g}, {le:g}]"
    if gt == 0 or (ge == 1 and integer):
        return "positive"
    if ge == 0:
        return "0 or positive"
    return f"at least {ge:g}" if ge is not None else f"greater than {gt:g}"


def allowed(name: str) -> str:
    """What key ``name`` accepts, in words (e.g. "positive (a number)")."""
    kind, optional = _base_type(name)
    meta = _FIELDS[name].metadata
    if meta["choices"]:
        text = "one of " + ", ".join(map(repr, meta["choices"]))
    elif meta["device"]:
        text = DEVICE_TEXT
    elif typing.get_origin(kind) is list:
        text = f"a list of {meta['length']} integers, each {_bounds(meta, True)}"
    elif kind in (int, float) and any(meta[b] is not None for b in ("ge", "gt", "le")):
        text = f"{_bounds(meta, kind is int)} ({'an integer' if kind is int else 'a number'})"
    else:
        text = {bool: "true or false", str: "text", int: "an integer", float: "a number"}[kind]
    return text + (" or null" if optional else "")


def describe_keys(exclude: tuple[str, ...] = ()) -> str:
    """Every key with what it accepts and what it does: the epilog of ``thadcr train --help``."""
    lines = [
        "keys (key=value; values are read as YAML: true/false, also yes/no and on/off, are booleans;",
        "null means none; [4,10,12] is a list; a text key keeps the text given):",
    ]
    for name, spec in _FIELDS.items():
        if name not in exclude:
            text = f"{name:<22} {allowed(name)}: {spec.metadata['help']}"
            lines += textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent=" " * 25)
    return "\n".join(lines)


def valid_keys() -> list[str]:
    return list(_FIELDS)


def _unknown(values: dict[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid_keys())}")


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from every key: unknown keys are refused with the list of valid ones, a
    missing key is refused unless `KEYS_ADDED` says what it was before it existed."""
    _unknown(values, source)
    missing = [name for name in _FIELDS if name not in values and name not in KEYS_ADDED]
    if missing:
        raise ConfigError(
            f"{source}: missing key(s) {', '.join(missing)}: a run's config sets every key "
            f"(start from a profile in {PROFILE_DIR})"
        )
    try:
        return Config(**{**KEYS_ADDED, **values})
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """A profile's values, checked: a mapping that sets every key with a valid value."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile is a mapping of key: value lines, got {type(values).__name__}")
    _unknown(values, str(path))
    missing = [name for name in _FIELDS if name not in values]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}: a profile sets every key")
    from_dict(values, source=str(path))  # validate the profile on its own
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (numbers, lists, null, booleans); a text key
    keeps the text given where YAML would read a number, a date or a boolean."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in _FIELDS:
        raise ConfigError(f"override {text!r}: unknown key {key!r}. Valid keys: {', '.join(valid_keys())}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise ConfigError(
            f"override {text!r}: the value is not valid YAML ({problem}); {key} must be {allowed(key)}"
        ) from None
    if _base_type(key)[0] is str and value is not None and not isinstance(value, (str, list, dict)):
        value = raw.strip()
    return key, value


def make_config(profile: str = "tiny", overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """A profile's values with overrides applied (a list of ``key=value`` strings or a dict)."""
    values = load_profile(profile)
    if isinstance(overrides, dict):
        _unknown(overrides, "overrides")
        values.update(overrides)
    else:
        values.update(dict(parse_override(o) for o in overrides or []))
    return from_dict(values, source=f"profile {profile!r} with overrides")


def save_config(config: Config, path: str | Path) -> None:
    """``config`` as JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(config.to_dict(), indent=2) + "\n").encode())
