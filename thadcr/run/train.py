"""Training of one run (the pipeline of the paper's ref [8], section 3.1), resumable.

`train(config, out_dir)` writes into out_dir:

- `last.pt`: the resumable state after each epoch (model, optimiser, schedule, every rank's RNG,
  history);
- `best.pt`: the weights of the epoch that is tested: the best by validation text-to-audio
  R@1 + R@5 + R@10 (the rule of ref [8]'s public code), or the last one with `model_selection: last`;
- `log.csv`: one row per epoch; `test_ranks.npz`: each test query's rank (for the claims'
  intervals); `factors.npz` for variants with latent factors;
- `metrics.json`: test metrics, config, git commit, versions, device, seed, wall time. It is
  written last: its presence marks a finished run, which is never overwritten.

Every file is written atomically. Batches come from a DataLoader (`num_workers` processes);
several processes (torchrun) split each global batch and gather the embeddings, so the
contrastive loss sees the whole batch (`thadcr.run.distributed.Distributed`). One step is
`train_step`; `gradient_norms` measures the gradient of each term of the loss apart.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import platform
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from thadcr import numerics
from thadcr.run.checkpoint import load_saved_state, saved_state
from thadcr.config import SPLITS, Config, save_config
from thadcr.data.datasets import CaptionDataset, GlobalBatchSampler, data_loader
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import Split
from thadcr.run.distributed import Distributed
from thadcr.errors import RunError
from thadcr.run.features import AudioFeatureCache
from thadcr.run.evaluation import (
    EvalSet,
    audio_feature_cache,
    encode_split,
    evaluate_split,
    factor_analysis,
    frames_per_clip,
    open_split,
    score_split,
)
from thadcr.files import atomic_save, atomic_write_bytes, atomic_write_json
from thadcr.run.metrics import query_ranks, retrieval_metrics
from thadcr.model.retrieval import RetrievalModel, build_model
from thadcr.run.provenance import code_state, package_versions
from thadcr.model.text import TextFeatureCache

log = logging.getLogger(__name__)

SELECTION_KEYS = ("t2a_R1", "t2a_R5", "t2a_R10")  # validation score that picks the tested epoch
LOSS_TERMS = ("loss", "loss_S", "loss_D", "loss_A")
VAL_KEYS = ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "a2t_R5", "a2t_R10")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel. Its square roots are ATen's own; the default (foreach) Adam takes
    them from MKL's vector math on the CPU, whose last bits depend on the CPU's vendor (`thadcr.portable`)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def train_step(model, world, optimizer, params, audio, text, clip_ids, grad_clip, autocast=nullcontext()) -> dict:
    """One optimisation step on this rank's share of a global batch (embeddings gathered from all ranks).

    audio (log-mels (B / world, frames, mel), or a frozen encoder's cached features) and text
    (captions or cached features) are this rank's rows;
    clip_ids (B,) holds every rank's clip ids (captions of one clip are positives, Eq. 5).
    """
    with autocast:
        audio_emb, text_emb = world.forward(model, audio, text)
        audio_emb, text_emb = world.gather_embeddings(audio_emb), world.gather_embeddings(text_emb)
        losses = model.loss_from_embeddings(audio_emb, text_emb, clip_ids)
    optimizer.zero_grad(set_to_none=True)
    world.backward(losses["loss"], model)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return losses


def gradient_norms(losses: dict[str, torch.Tensor], params: list[torch.nn.Parameter]) -> dict[str, float]:
    """The norm of each loss's gradient with respect to `params`, one loss at a time: the 2-norm of
    all the parameters' gradients together (the norm `train_step` clips at ``grad_clip``), in float64.

    A parameter a loss does not reach adds nothing; a loss that reaches none (a constant, such as
    L_D of a variant without factors) has norm 0. The graph is kept, so the caller can still
    back-propagate. No parameter's ``.grad`` is touched.
    """
    norms = {}
    for name, loss in losses.items():
        if not loss.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms[name] = math.sqrt(sum(float(g.double().square().sum()) for g in grads if g is not None))
    return norms


@dataclass
class Session:
    """Everything one run works with, set up once by `prepare`."""

    config: Config
    out: Path
    world: Distributed
    splits: dict[str, Split]
    cache: LogMelCache
    n_frames: int
    model: RetrievalModel
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    text_caches: dict[str, TextFeatureCache]  # the frozen encoders' features, filled split by split as needed
    audio_caches: dict[str, AudioFeatureCache]
    sampler: GlobalBatchSampler
    loader: torch.utils.data.DataLoader
    progress: str  # "bar", "lines" or "none" (see `train`)
    test_split: str = "test"  # the split tested at the end ("val" for pilots that must not see the test set)

    @property
    def device(self) -> torch.device:
        return self.world.device

    def autocast(self):
        """bfloat16 autocast on CUDA with ``amp``; nothing on the CPU."""
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def features(self, split: str) -> tuple[TextFeatureCache | None, AudioFeatureCache | None]:
        """The frozen encoders' cached features of `split` (None for an encoder that trains), read or
        computed on first use: a run that stops before validating (a trace) computes only the
        training split's."""
        if self.model.text_encoder.frozen and split not in self.text_caches:
            self.text_caches[split] = TextFeatureCache(self.model.text_encoder, self.splits[split].captions, self.device,
                                                       cache_dir=self.cache.folder)
        if self.model.audio_frozen and split not in self.audio_caches:
            self.audio_caches[split] = audio_feature_cache(self.model, self.config, self.splits[split], self.cache,
                                                           self.n_frames, self.progress == "bar")
        return self.text_caches.get(split), self.audio_caches.get(split)

    def eval_set(self, split: str) -> EvalSet:
        """Split `split` as evaluation reads it (its frozen encoders' features when cached)."""
        text, audio = self.features(split)
        return EvalSet(self.splits[split], self.cache, self.n_frames, self.device, self.config.eval_batch,
                       text, self.config.num_workers, audio, self.config.eval_fold_clips)

    def evaluate(self, split: str) -> dict:
        return evaluate_split(self.model, self.eval_set(split))

    def encode(self, split: str):
        return encode_split(self.model, self.eval_set(split))


def prepare(config: Config, out: Path, world: Distributed, progress: str) -> Session:
    """Data, model, optimiser and loader of a run (every rank builds the same model from config.seed)."""
    seed_everything(config.seed)
    splits, cache = {}, None
    for name in SPLITS:
        splits[name], cache = open_split(config, name)
    n_frames = frames_per_clip(config, cache.logmel)
    spec_augment = (config.specaug_time_masks, config.specaug_time_width,
                    config.specaug_freq_masks, config.specaug_freq_width)
    train_set = CaptionDataset(splits["train"], cache, n_frames, train=True, seed=config.seed, spec_augment=spec_augment,
                               with_audio=not config.audio_frozen)
    if len(train_set) < config.batch_size:
        raise RunError(f"{config.data_root}: {len(train_set)} training captions, fewer than batch_size={config.batch_size}")
    if config.batch_size % world.world:
        raise RunError(f"batch_size={config.batch_size} is not divisible by the {world.world} processes")
    model = build_model(config).to(world.device)
    text_caches, audio_caches = {}, {}  # the training split's now, the others' when evaluation needs them
    if model.text_encoder.frozen:
        text_caches["train"] = TextFeatureCache(model.text_encoder, splits["train"].captions, world.device,
                                                cache_dir=cache.folder)
    if model.audio_frozen:  # rank 0 computes a missing cache file, then the other ranks read it
        for turn in (world.main, not world.main):
            if turn:
                audio_caches["train"] = audio_feature_cache(model, config, splits["train"], cache, n_frames,
                                                            progress == "bar")
            world.barrier()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(params, config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    sampler = GlobalBatchSampler(len(train_set), config.batch_size, config.seed, world.rank, world.world,
                                 config.max_steps_per_epoch)
    loader = data_loader(train_set, config.num_workers, world.device.type == "cuda", batch_sampler=sampler)
    world.wrap(model)  # DDP broadcasts rank 0's weights to every rank here
    seed_everything(world.rank_seed(config.seed))  # dropout and stochastic depth differ between ranks
    return Session(config, out, world, splits, cache, n_frames, model, params, optimizer, scheduler,
                   text_caches, audio_caches, sampler, loader, progress)


def fill_feature_caches(config: Config, parts: tuple[str, ...] = ("text", "audio")) -> None:
    """Compute the frozen encoders' features of every split of the config's data set into their
    disk caches (``parts``: the text encoder's, the audio encoder's), as `prepare` would, so that
    runs started side by side read them instead of each computing them (`thadcr.experiments.execution`)."""
    numerics.apply(config.numerics)
    model = build_model(config)
    for name in SPLITS:
        split, cache = open_split(config, name)
        if "text" in parts and model.text_encoder.frozen:
            TextFeatureCache(model.text_encoder, split.captions, torch.device("cpu"), cache_dir=cache.folder)
        if "audio" in parts:
            audio_feature_cache(model, config, split, cache, frames_per_clip(config, cache.logmel))


def _prepare_out_dir(out: Path, resume: bool) -> None:
    if (out / "metrics.json").exists():
        raise RunError(f"{out} holds a finished run (metrics.json); choose another output folder or delete it.")
    if (out / "last.pt").exists() and not resume:
        raise RunError(f"{out} holds an interrupted run (last.pt); pass resume=True (--resume) to continue it.")
    out.mkdir(parents=True, exist_ok=True)


def initial_state(run: Session, resume: bool) -> tuple[dict, dict | None]:
    """(progress state, C and confidences of the untrained model): fresh, or read from last.pt."""
    path = run.out / "last.pt"
    if resume and path.exists():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        load_saved_state(run.model, ckpt["model"], path)
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if not run.world.set_rng_state(ckpt["rng"]):
            log.warning("%s was written by %d process(es), this run has %d: it goes on, but its random "
                        "draws differ from an uninterrupted run's", path, len(ckpt["rng"]), run.world.world)
        return ckpt["state"], ckpt.get("initial_factors")
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "elapsed": 0.0}
    if not run.model.uses_factors:
        return state, None
    audio, text = run.encode(run.test_split)  # C of the untrained model, for the before/after figure
    analysis = factor_analysis(run.model, audio, text, run.splits[run.test_split].caption_audio)
    return state, {k: torch.as_tensor(v) for k, v in analysis.items()}


def train_epoch(run: Session, epoch: int) -> dict:
    """One pass over this epoch's global batches; returns the mean losses, the lr and the share of
    the time spent waiting for data."""
    started = time.time()
    run.model.train()
    run.sampler.set_epoch(epoch)
    sums = dict.fromkeys(LOSS_TERMS, 0.0)
    data_time, steps = 0.0, 0
    cached, cached_audio = run.text_caches.get("train"), run.audio_caches.get("train")
    bar = tqdm(total=len(run.sampler), desc=f"epoch {epoch}/{run.config.epochs}", disable=run.progress != "bar",
               leave=False)
    waiting = time.time()
    for batch in run.loader:
        text = cached(batch["caption_index"]) if cached else batch["captions"]
        audio = cached_audio(batch["clip_index"]) if cached_audio else batch["logmel"].to(run.device, non_blocking=True)
        clip_ids = run.world.gather(batch["clip_index"].to(run.device))
        data_time += time.time() - waiting
        losses = train_step(run.model, run.world, run.optimizer, run.params, audio, text, clip_ids,
                            run.config.grad_clip, run.autocast())
        for key in sums:
            sums[key] += float(losses[key].detach())
        steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
        waiting = time.time()
    bar.close()
    row = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()}}
    row["lr"] = run.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
    run.scheduler.step()
    row["data_time_share"] = data_time / max(time.time() - started, 1e-9)
    return row


def end_epoch(run: Session, state: dict, row: dict, initial_factors: dict | None, started: float) -> None:
    """Rank 0: validate, keep the epoch to test (best.pt), save the resumable state (last.pt) and the log."""
    rng = run.world.rng_states()  # a collective: every rank calls it
    state["epoch"] = row["epoch"]
    if not run.world.main:
        return
    validate = row["epoch"] % run.config.val_every == 0 or row["epoch"] == run.config.epochs
    val = run.evaluate("val") if validate else dict.fromkeys(VAL_KEYS, math.nan)
    row.update({f"val_{k}": val[k] for k in VAL_KEYS})
    row["seconds"] = time.time() - started
    score = sum(val[k] for k in SELECTION_KEYS)
    state["history"].append(row)
    if validate and (score > state["best_score"] or run.config.model_selection == "last"):
        state["best_score"], state["best_epoch"] = score, row["epoch"]
        weights = {"model": saved_state(run.model), "epoch": row["epoch"], "config": run.config.to_dict()}
        atomic_save(weights, run.out / "best.pt")
    state["elapsed"] += time.time() - started
    atomic_save({"model": saved_state(run.model), "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "rng": rng, "state": state,
                 "initial_factors": initial_factors}, run.out / "last.pt")
    _write_log(run.out / "log.csv", state["history"])
    if run.progress != "none":
        checked = (f"val t2a R@1/5/10 {row['val_t2a_R1']:.1f}/{row['val_t2a_R5']:.1f}/{row['val_t2a_R10']:.1f}"
                   if validate else f"not validated (val_every={run.config.val_every})")
        tqdm.write(f"epoch {row['epoch']}/{run.config.epochs}: loss {row['loss']:.4f}  {checked}  {row['seconds']:.0f} s")


def _write_log(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(path, buffer.getvalue().encode())


def first_gallery(arrays: dict, caption_audio, fold_clips: int) -> dict:
    """The per-caption arrays (CA's confidences, (Nt, K)) cut to the captions of the first fold
    (all with one gallery): 10 folds' 10,000 captions would make the file 1 MB of floats, and their
    distribution is the same; C (K, K) is computed over every caption and kept whole."""
    owner = np.asarray(caption_audio)
    keep = owner < fold_clips if fold_clips else np.ones(len(owner), bool)
    return {key: value[keep] if key.startswith("g_") else value for key, value in arrays.items()}


def _write_npz(path: Path, arrays: dict) -> None:
    """Compressed: 10 test folds' ranks are small integers that zip to a tenth of their size."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def evaluate_tested_epoch(run: Session, initial_factors: dict | None) -> dict:
    """Rank 0: test the chosen epoch (best.pt); return the test metrics. Also writes each test
    query's rank (test_ranks.npz, for the claims' bootstrap, `thadcr.experiments.claims`) and, for variants
    with factors, C and the CA confidences before and after training (factors.npz)."""
    best = torch.load(run.out / "best.pt", map_location="cpu", weights_only=True)
    load_saved_state(run.model, best["model"], run.out / "best.pt")
    audio, text = run.encode(run.test_split)
    caption_audio = run.splits[run.test_split].caption_audio
    sim = score_split(run.model, audio, text, run.eval_set(run.test_split))  # (Na, Nt), -inf across folds
    _write_npz(run.out / "test_ranks.npz", {**query_ranks(sim, caption_audio),
                                            "caption_audio": np.asarray(caption_audio, np.int64)})
    if run.model.uses_factors:
        trained = factor_analysis(run.model, audio, text, caption_audio)
        arrays = {"C_trained": trained.pop("C"), "C_initial": np.asarray(initial_factors["C"]), **trained}
        arrays.update({f"{k}_initial": np.asarray(v) for k, v in initial_factors.items() if k != "C"})
        _write_npz(run.out / "factors.npz", first_gallery(arrays, caption_audio, run.config.eval_fold_clips))
    return retrieval_metrics(sim, caption_audio)


def run_record(run: Session, state: dict, test: dict, started: float, code: dict) -> dict:
    """The content of metrics.json; `code` is `provenance.code_state()` taken when the run started."""
    device = run.device
    return {
        "test": test,
        "tested_on": run.test_split,
        "best_epoch": state["best_epoch"],
        "val_best": state["best_score"],
        "config": run.config.to_dict(),
        **code,
        "versions": package_versions(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processes": run.world.world,
                    "torch_threads": torch.get_num_threads()},
        "numerics": numerics.describe(),
        "seed": run.config.seed,
        "n_parameters": sum(p.numel() for p in run.model.parameters()),
        "n_trainable": sum(p.numel() for p in run.params),
        "data": {name: {"clips": s.n_clips, "captions": len(s.captions), "missing": len(s.missing)}
                 for name, s in run.splits.items()},
        "train_seconds": state["elapsed"],
        "wall_time_s": time.time() - started,
    }


def train(config: Config, out_dir: str | Path, resume: bool = False, progress: bool | str = True,
          test_split: str = "test") -> dict:
    """Train one run, select the epoch to test (``config.model_selection``), test it; returns the
    metrics dict (empty on ranks other than 0).

    test_split: the split tested at the end and written to test_ranks.npz and metrics.json's
    ``test`` ("val" for pilot runs that choose settings without looking at the test set).

    progress: "bar" (True) a progress bar per epoch and a line after it; "lines" only the line
    after each epoch (papermill runs: a notebook keeps every bar update); "none" (False) silence.
    """
    progress = {True: "bar", False: "none"}.get(progress, progress)
    if progress not in ("bar", "lines", "none"):
        raise ValueError(f"progress={progress!r} is not one of True, False, 'bar', 'lines', 'none'")
    if test_split not in SPLITS:
        raise ValueError(f"test_split={test_split!r} is not one of {', '.join(SPLITS)}")
    numerics.apply(config.numerics)  # before this process computes anything (thadcr.numerics)
    started, code = time.time(), code_state()
    out = Path(out_dir)
    world = Distributed(config.device)
    try:
        if world.main:
            _prepare_out_dir(out, resume)
        world.barrier()
        run = prepare(config, out, world, progress if world.main else "none")
        run.test_split = test_split
        state, initial_factors = initial_state(run, resume)
        if world.main:
            save_config(config, out / "config.json")
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            epoch_started = time.time()
            row = train_epoch(run, epoch)
            end_epoch(run, state, row, initial_factors, epoch_started)
            world.barrier()
        result = {}
        if world.main:
            result = run_record(run, state, evaluate_tested_epoch(run, initial_factors), started, code)
            atomic_write_json(out / "metrics.json", result)
        world.barrier()
        return result
    finally:
        world.close()
