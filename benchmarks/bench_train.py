"""Training-step time of every variant relative to DP, and the share of time spent waiting for data.

Measured side by side in one run (the variants interleaved step by step), on the tiny profile and
the embedded data set (build it first with `thadcr data build`), with the log-mel cache warm, as a
training run finds it after its first epoch. Goals (issue 3): THA+DCR <= 1.5x DP per step; data
wait < 10%.

    .venv/bin/python benchmarks/bench_train.py [--steps 8] [--profile tiny] [key=value ...]
"""

from __future__ import annotations

import argparse
import time
import torch
from tqdm.auto import tqdm

from thadcr.config import VARIANTS, make_config
from thadcr.data.datasets import CaptionDataset, collate
from thadcr.model.retrieval import build_model
from thadcr.run.distributed import Distributed
from thadcr.run.evaluation import frames_per_clip, open_split
from thadcr.model.text import TextFeatureCache
from thadcr.run.train import adam, train_step


class Runner:
    """One variant's model, optimiser and data, stepping through the same batch order as the others."""

    def __init__(self, config, split, cache):
        torch.manual_seed(config.seed)
        self.config = config
        self.model = build_model(config)
        self.model.train()
        self.world = Distributed("cpu" if config.device == "auto" and not torch.cuda.is_available() else config.device)
        self.model.to(self.world.device)
        frozen = self.model.text_encoder.frozen
        self.text_cache = TextFeatureCache(self.model.text_encoder, split.captions, self.world.device) if frozen else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adam(self.params, config.lr)
        self.dataset = CaptionDataset(split, cache, frames_per_clip(config, cache.logmel), train=True, seed=config.seed)
        self.order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(0))
        self.data_s = self.step_s = 0.0

    def step(self, step: int, timed: bool) -> None:
        """One training step on batch `step`: loading + collating (data) and the whole step timed."""
        size = self.config.batch_size
        t0 = time.perf_counter()
        index = self.order[step * size : (step + 1) * size]
        batch = collate([self.dataset[int(i)] for i in index])
        text = self.text_cache(batch["caption_index"]) if self.text_cache else batch["captions"]
        logmel = batch["logmel"].to(self.world.device)
        t1 = time.perf_counter()
        clip_ids = batch["clip_index"].to(self.world.device)
        train_step(self.model, self.world, self.optimizer, self.params, logmel, text, clip_ids, self.config.grad_clip)
        if self.world.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if timed:
            self.data_s += t1 - t0
            self.step_s += t2 - t0


def measure(runners: dict[str, Runner], steps: int, warmup: int = 2) -> dict:
    """Seconds per step and data share of each variant, the variants interleaved step by step.

    Round-robin (step k of every variant, then step k + 1 ...) so that a change of machine load
    during the run hits every variant alike and the ratios stay comparable.
    """
    for step in tqdm(range(warmup + steps), desc="steps (all variants)", leave=False):
        for runner in runners.values():
            runner.step(step, timed=step >= warmup)
    return {name: {"step_s": r.step_s / steps, "data_share": r.data_s / r.step_s} for name, r in runners.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    base = make_config(args.profile, args.overrides)
    split, cache = open_split(base, "train")
    for path in split.audio_paths:
        cache.get(path)  # warm the log-mel cache (disk and memory), as a run's later epochs find it
    print(f"profile {args.profile}, batch {base.batch_size}, {args.steps} timed steps, torch threads {torch.get_num_threads()}")
    rows = [("DP (ResNet38)", base.replace(variant="DP", audio_encoder="resnet38"))]
    rows += [(v, base.replace(variant=v)) for v in VARIANTS]
    results = measure({name: Runner(config, split, cache) for name, config in rows}, args.steps)
    reference = results["DP"]["step_s"]
    print(f"{'variant':<15}{'s/step':>10}{'x DP':>8}{'data wait':>11}")
    for name, r in results.items():
        print(f"{name:<15}{r['step_s']:>10.3f}{r['step_s'] / reference:>8.2f}{100 * r['data_share']:>10.1f}%")
    ratio = results["THA+DCR"]["step_s"] / reference
    worst_wait = max(r["data_share"] for r in results.values())
    print(f"THA+DCR / DP = {ratio:.2f} (goal <= 1.5); largest data-wait share {100 * worst_wait:.1f}% (goal < 10%)")


if __name__ == "__main__":
    main()
