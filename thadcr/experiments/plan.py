"""The plan behind the paper's Tables 1-5: each table's rows and settings, the runs they expand to,
each run's Config, shards of the plan, and the state of a run's folder.

- ``plan(profile)`` expands Tables 1-5 (section 3) into runs; a run shared by several tables
  (e.g. DCR with K=8, alpha=0.01, beta=0.005 is in Tables 1, 3, 4 and 5) runs once.
- ``select_shard(runs, "i/n")`` splits the plan for SLURM arrays.
- A run's folder is ``results/<profile>/runs/<run-id>/`` (``runs_dir``); it is finished when its
  metrics.json is there (``is_complete``, ``read_metrics``), and stale when that records other
  settings than the plan's now (``stale_settings``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from thadcr.config import KEYS_ADDED, VARIANT_PARTS, Config, ConfigError, make_config
from thadcr.errors import ThadcrError

REPO_ROOT = Path(__file__).resolve().parents[2]

PROFILES = ("tiny", "paper")
DATASETS = ("audiocaps", "clotho")
TABLES = (1, 2, 3, 4, 5)
METRICS = ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "a2t_R5", "a2t_R10")
EXTRA_METRICS = ("t2a_mAP10", "a2t_mAP10")  # ours only: the paper reports no mAP@10
TINY_DATA_ROOTS = {"audiocaps": "data/embedded/audiocaps", "clotho": "data/embedded/clotho"}
PANNS_CHECKPOINT = "checkpoints/ResNet38_mAP=0.434.pth"
TINY_RESNET38_CHECKPOINT = "checkpoints/tiny/resnet38-tiny.pth"  # `thadcr pretrain` (docs/decisions/pretrain.md)

# Paper section 3.1: K = 8, alpha = 0.01, beta = 0.005.
_PAPER = {"audio_encoder": "htsat", "n_factors": 8, "alpha": 0.01, "beta": 0.005}


def _row(variant: str, **changes: Any) -> dict[str, Any]:
    return {**_PAPER, "variant": variant, **changes}


# (method label as in data/paper_results.csv, settings); the data set of each table below.
TABLE_ROWS: dict[int, list[tuple[str, dict[str, Any]]]] = {
    1: [
        ("DP (ResNet38)", _row("DP", audio_encoder="resnet38")),
        ("DP (HTSAT)", _row("DP")),
        ("THA", _row("THA")),
        ("THA+DP", _row("THA+DP")),
        ("DCR", _row("DCR")),
        ("THA+DCR", _row("THA+DCR")),
    ],
    2: [
        ("DP (HTSAT)", _row("DP")),
        ("THA", _row("THA")),
        ("THA+DP", _row("THA+DP")),
        ("DCR", _row("DCR")),
        ("THA+DCR", _row("THA+DCR")),
    ],
    3: [
        ("DP (HTSAT)", _row("DP")),
        ("DP+LD", _row("DP+LD")),
        ("DP+LD+LA", _row("DP+LD+LA")),
        ("DCR", _row("DCR")),
    ],
    4: [(f"K={k}", _row("DCR", n_factors=k)) for k in (6, 8, 10)],
    5: [(f"alpha={a:g}", _row("DCR", alpha=a)) for a in (0.005, 0.01, 0.02)]
    + [(f"beta={b:g}", _row("DCR", beta=b)) for b in (0.001, 0.005, 0.01)],
}
TABLE_TITLES = {
    1: "ATR performance on the AudioCaps dataset",
    2: "ATR performance on the Clotho dataset",
    3: "Effect of each part of our DCR method",
    4: "Effect of the number of latent factors",
    5: "Effect of the trade-off hyper-parameters alpha and beta",
}
TABLE_DATASET = {1: "audiocaps", 2: "clotho", 3: "audiocaps", 4: "audiocaps", 5: "audiocaps"}
# Tables whose rows run every seed of the plan, and the plan's seeds: the paper repeats Table 1
# over 3 seeds and runs the others once; the tiny plan runs every row with the seeds its power
# analysis asks for (docs/decisions/power.md).
SEEDED_TABLES = {"tiny": TABLES, "paper": (1,)}
DEFAULT_SEEDS = {"tiny": 8, "paper": 3}
# The tiny plan's THA rows run fewer seeds: THA scores each 200-clip fold's 200 x 1,000 pairs in
# about 25 s on one core, so a THA run costs about 10 minutes against under one for the others
# (docs/decisions/power.md). None: as many as the other rows.
DEFAULT_THA_SEEDS = {"tiny": 1, "paper": None}


class ReproduceError(ThadcrError, RuntimeError):
    """A plan, a results folder or a results file is unusable; the message says what to do."""


def setting_id(dataset: str, variant: str, audio_encoder: str, n_factors: int, alpha: float, beta: float) -> str:
    """A run's settings but the seed, e.g. ``audiocaps-DCR-htsat-K8-a0.01-b0.005``."""
    return f"{dataset}-{variant}-{audio_encoder}-K{n_factors}-a{alpha:g}-b{beta:g}"

# ----------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the plan; ``tables`` lists the tables that use it."""

    profile: str
    dataset: str
    variant: str
    audio_encoder: str
    n_factors: int
    alpha: float
    beta: float
    seed: int
    tables: tuple[int, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()  # other Config keys, the same for every run of a plan

    @property
    def setting_id(self) -> str:
        return setting_id(self.dataset, self.variant, self.audio_encoder, self.n_factors, self.alpha, self.beta)

    @property
    def run_id(self) -> str:
        return f"{self.setting_id}-s{self.seed}"

    def config(self) -> Config:
        """The Config that notebooks/train.py builds from :meth:`parameters`."""
        return config_from_parameters(self.parameters(Path(), False))

    def parameters(self, out_dir: Path, resume: bool) -> dict[str, Any]:
        """The parameters of notebooks/train.py for this run."""
        return {
            "variant": self.variant,
            "dataset": self.dataset,
            "profile": self.profile,
            "seed": self.seed,
            "n_factors": self.n_factors,
            "alpha": self.alpha,
            "beta": self.beta,
            "epochs": None,
            "out_dir": str(out_dir),
            "device": "auto",
            "overrides": {"audio_encoder": self.audio_encoder, **dict(self.overrides)},
            "resume": resume,
            "progress": "lines",
        }


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ReproduceError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")


PLAN_KEYS = ("variant", "audio_encoder", "n_factors", "alpha", "beta", "seed", "data_root", "device")


def plan(
    profile: str, tables: Iterable[int] = TABLES, seeds: int | None = None, overrides: dict[str, Any] | None = None,
    tha_seeds: int | None = None,
) -> list[Run]:
    """The runs of the chosen tables: the rows of the profile's ``SEEDED_TABLES`` run ``seeds``
    seeds (0..seeds-1; default ``DEFAULT_SEEDS``), their THA rows ``tha_seeds`` (default ``DEFAULT_THA_SEEDS``, at most ``seeds``), the
    others seed 0.

    A run used by several tables appears once (tables merged), in order of first use.
    ``overrides`` changes other Config keys in every run (e.g. an ablation of the whole plan into
    its own results folder); the keys the plan itself sets (``PLAN_KEYS``) are refused.
    """
    _check_profile(profile)
    overrides = dict(overrides or {})
    fixed = sorted(set(overrides) & set(PLAN_KEYS))
    if fixed:
        raise ReproduceError(f"--set {', '.join(fixed)}: the plan sets {', '.join(PLAN_KEYS)} itself")
    try:  # unknown keys and bad values fail here, not in every run's notebook
        config_for(profile, TABLE_DATASET[min(TABLES)], overrides)
    except ConfigError as error:
        raise ReproduceError(f"--set: {error}") from None
    tables = tuple(tables)
    unknown = sorted(set(tables) - set(TABLES))
    if unknown or not tables:
        raise ReproduceError(f"tables {list(tables)}: choose among {list(TABLES)}")
    seeds = DEFAULT_SEEDS[profile] if seeds is None else seeds
    tha_seeds = DEFAULT_THA_SEEDS[profile] if tha_seeds is None else tha_seeds
    tha_seeds = seeds if tha_seeds is None else min(tha_seeds, seeds)
    if seeds < 1 or tha_seeds < 1:
        raise ReproduceError(f"seeds must be at least 1, got {seeds} (THA rows {tha_seeds})")
    runs: dict[str, Run] = {}
    for table in sorted(set(tables)):
        for _, settings in TABLE_ROWS[table]:
            row_seeds = tha_seeds if VARIANT_PARTS[settings["variant"]].tha else seeds
            for seed in range(row_seeds if table in SEEDED_TABLES[profile] else 1):
                run = Run(profile=profile, dataset=TABLE_DATASET[table], seed=seed,
                          overrides=tuple(sorted(overrides.items())), **settings)
                known = runs.get(run.run_id, run)
                runs[run.run_id] = dataclasses.replace(known, tables=tuple(sorted({*known.tables, table})))
    return list(runs.values())


def config_for(profile: str, dataset: str, overrides: dict[str, Any] | None = None) -> Config:
    """The Config of one run: profile ``tiny`` (embedded data) or ``paper`` (paper-<dataset>.yaml).

    A ResNet38 run loads the profile's ResNet38 checkpoint unless ``audio_checkpoint`` is given
    (the profiles name the HTS-AT one): the PANNs one on the paper profile, the narrow ResNet38
    tagger of ``thadcr pretrain`` on the tiny profile.
    """
    _check_profile(profile)
    if dataset not in DATASETS:
        raise ReproduceError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    overrides = dict(overrides or {})
    if profile == "tiny":
        overrides.setdefault("data_root", TINY_DATA_ROOTS[dataset])
    if overrides.get("audio_encoder") == "resnet38":
        overrides.setdefault("audio_checkpoint", TINY_RESNET38_CHECKPOINT if profile == "tiny" else PANNS_CHECKPOINT)
    return make_config("tiny" if profile == "tiny" else f"paper-{dataset}", overrides)


def config_from_parameters(parameters: dict[str, Any]) -> Config:
    """The Config of one run from the parameters of notebooks/train.py (see :meth:`Run.parameters`):
    the run's settings, then ``overrides``, then ``epochs`` unless it is None (the profile's)."""
    settings = {key: parameters[key] for key in ("variant", "seed", "n_factors", "alpha", "beta", "device")}
    settings.update(parameters.get("overrides") or {})
    if parameters.get("epochs") is not None:
        settings["epochs"] = parameters["epochs"]
    return config_for(parameters["profile"], parameters["dataset"], settings)


def train_profile(profile: str, dataset: str) -> str:
    """The `thadcr train` profile of a plan's run: ``tiny``, or ``paper-<dataset>``."""
    return "tiny" if profile == "tiny" else f"paper-{dataset}"


def override_text(value: Any) -> str:
    """A Config value as `key=value` text that `thadcr.config.parse_override` reads back as it is."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)  # JSON is YAML: numbers, lists, true/false, null, quoted text


def profile_changes(profile: str, dataset: str, config: Config) -> dict[str, Any]:
    """The keys of ``config`` whose value differs from its `train_profile`'s, in Config order."""
    base = make_config(train_profile(profile, dataset)).to_dict()
    return {key: value for key, value in config.to_dict().items() if value != base[key]}


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if shard is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ReproduceError(
            f"shard {shard!r} must be 'i/n' with 0 <= i < n, e.g. '0/4' (SLURM: $SLURM_ARRAY_TASK_ID/n)"
        )
    return int(match[1]), int(match[2])


def select_shard(runs: Sequence[Run], shard: str | None) -> list[Run]:
    """Deterministic round-robin: shard i/n takes runs i, i+n, i+2n, ... of the plan's order."""
    index, count = parse_shard(shard)
    return list(runs[index::count])


# ----------------------------------------------------------------------------- run folders
def runs_dir(results_dir: str | Path, profile: str) -> Path:
    return Path(results_dir) / profile / "runs"


def is_complete(run_dir: Path) -> bool:
    """metrics.json is written last and atomically by thadcr.run.train: its presence means done."""
    return (run_dir / "metrics.json").is_file()


def read_metrics(path: Path) -> dict[str, Any]:
    """One run's metrics.json, checked for the test metrics the tables need."""
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReproduceError(f"{path}: not valid JSON ({error}); delete the run folder and execute again") from None
    missing = [key for key in METRICS if key not in metrics.get("test", {})]
    if missing:
        raise ReproduceError(f"{path}: 'test' lacks {', '.join(missing)}; delete the run folder and execute again")
    return metrics


def stale_settings(run: Run, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """Keys whose value in a finished run's metrics.json differs from the plan's config now:
    key -> (recorded, planned). A key the run did not record (Config gained it later) matches when
    the plan sets it to its value in `thadcr.config.KEYS_ADDED`, which keeps the behaviour from
    before the key existed; otherwise it shows as ``"<absent>"``."""
    metrics_path = run_dir / "metrics.json"
    try:
        recorded = json.loads(metrics_path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReproduceError(
            f"{metrics_path}: cannot read the run's recorded config ({error}); move the folder away to re-run it"
        ) from error
    planned = json.loads(json.dumps(run.config().to_dict()))
    earlier = json.loads(json.dumps(KEYS_ADDED))
    differences = {}
    for key, value in planned.items():
        if key in recorded:
            if recorded[key] != value:
                differences[key] = (recorded[key], value)
        elif key not in earlier or value != earlier[key]:
            differences[key] = ("<absent>", value)
    return differences


def check_not_stale(runs: Sequence[Run], root: Path) -> None:
    """Refuse to skip finished runs that were made with other settings than the plan's now
    (a changed profile, say): their results would be mixed silently with new ones."""
    stale = {}
    for run in runs:
        if is_complete(root / run.run_id):
            differences = stale_settings(run, root / run.run_id)
            if differences:
                stale[run.run_id] = differences
    if stale:
        lines = [
            f"  {root / run_id}: " + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in diffs.items())
            for run_id, diffs in stale.items()
        ]
        raise ReproduceError(
            f"{len(stale)} finished run(s) were made with other settings than the plan's now:\n"
            + "\n".join(lines)
            + "\nMove or delete those folders to re-run them with the current settings, or restore the settings."
        )
