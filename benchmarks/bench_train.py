"""Training-step time of every variant relative to DP, and the share of time spent waiting for data.

Measured side by side in one run, on the tiny profile and the embedded data set (build it first
with `thadcr data build`). Goals (issue 3): THA+DCR <= 1.5x DP per step; data wait < 10%.

    .venv/bin/python benchmarks/bench_train.py [--steps 8] [--profile tiny] [key=value ...]
"""

from __future__ import annotations

import argparse
import time
import torch

from thadcr.config import VARIANTS, make_config
from thadcr.datasets import CaptionDataset, collate
from thadcr.model import build_model
from thadcr.train import Distributed, TextFeatureCache, _split_setup, n_frames_for, train_step


def measure(config, split, cache, steps: int, warmup: int = 2) -> dict:
    """Seconds per step and the data share over `steps` steps after `warmup` steps."""
    torch.manual_seed(config.seed)
    model = build_model(config)
    model.train()
    world = Distributed("cpu" if config.device == "auto" and not torch.cuda.is_available() else config.device)
    model.to(world.device)
    text_cache = TextFeatureCache(model, split.captions, world.device) if model.text_encoder.frozen else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    dataset = CaptionDataset(split, cache, n_frames_for(config), train=True, seed=config.seed)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    data_s = step_s = 0.0
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        index = order[step * config.batch_size : (step + 1) * config.batch_size]
        batch = collate([dataset[int(i)] for i in index])
        text = text_cache(batch["caption_index"]) if text_cache else batch["captions"]
        logmel = batch["logmel"].to(world.device)
        t1 = time.perf_counter()
        train_step(model, world, optimizer, params, logmel, text, batch["clip_index"].to(world.device), config.grad_clip)
        if world.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step >= warmup:
            data_s += t1 - t0
            step_s += t2 - t0
    return {"step_s": step_s / steps, "data_share": data_s / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    base = make_config(args.profile, args.overrides)
    split, cache = _split_setup(base, "train")
    for path in split.audio_paths[: base.batch_size * (args.steps + 2) + base.batch_size]:
        cache.get(path)  # fill the log-mel cache first: the trainer computes each clip once
    print(f"profile {args.profile}, batch {base.batch_size}, {args.steps} timed steps, torch threads {torch.get_num_threads()}")
    rows = [("DP (ResNet38)", base.replace(variant="DP", audio_encoder="resnet38"))]
    rows += [(v, base.replace(variant=v)) for v in VARIANTS]
    results = {name: measure(config, split, cache, args.steps) for name, config in rows}
    reference = results["DP"]["step_s"]
    print(f"{'variant':<15}{'s/step':>10}{'x DP':>8}{'data wait':>11}")
    for name, r in results.items():
        print(f"{name:<15}{r['step_s']:>10.3f}{r['step_s'] / reference:>8.2f}{100 * r['data_share']:>10.1f}%")
    ratio = results["THA+DCR"]["step_s"] / reference
    worst_wait = max(r["data_share"] for r in results.values())
    print(f"THA+DCR / DP = {ratio:.2f} (goal <= 1.5); largest data-wait share {100 * worst_wait:.1f}% (goal < 10%)")


if __name__ == "__main__":
    main()
