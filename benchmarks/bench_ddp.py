"""Gradient communication of the paper-size model between 2 processes (gloo): one all-reduce per
tensor against DistributedDataParallel's buckets, side by side in one run.

The paper profile's THA+DCR model (the AudioSet HTS-AT, a BERT-base-sized text encoder, THA and
DCR heads; the CA module stays outside DDP, see `thadcr.run.distributed`) is built in each of two
processes. Each timed step back-propagates a cheap loss that touches every trainable parameter,
so the time is almost all communication:

- per tensor: backward, then one `all_reduce` per gradient tensor (what the trainer did before);
- DDP: the same backward through `Distributed.wrap`, whose buckets are all-reduced while the
  backward pass still runs.

It prints the number of collective calls per step and the seconds per step (median of `--steps`,
the two methods interleaved), and checks that both give the same gradients.

    .venv/bin/python benchmarks/bench_ddp.py [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from thadcr.config import make_config
from thadcr.run.distributed import Distributed, Encoders
from thadcr.model.retrieval import build_model
from thadcr.model.text import write_random_bert


class CheapLoss(torch.nn.Module):
    """sum_p <p, w_p> over the encoders' parameters: a forward/backward that costs next to nothing."""

    def __init__(self, encoders: torch.nn.Module) -> None:
        super().__init__()
        self.encoders = encoders
        self.weights = [torch.randn_like(p) for p in encoders.parameters() if p.requires_grad]

    def forward(self) -> torch.Tensor:
        params = [p for p in self.encoders.parameters() if p.requires_grad]
        return sum((p * w).sum() for p, w in zip(params, self.weights))


def worker(rank: int, world: int, bert: str, steps: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    distributed = Distributed("cpu")
    config = make_config("paper-audiocaps", {"text_model": bert, "audio_checkpoint": None, "device": "cpu"})
    # Two copies, so that the per-tensor backward never fires the hooks DDP puts on its parameters.
    torch.manual_seed(rank)
    plain = CheapLoss(Encoders(build_model(config)))
    torch.manual_seed(rank)
    ddp = torch.nn.parallel.DistributedDataParallel(CheapLoss(Encoders(build_model(config))), static_graph=True)
    params = [p for p in plain.encoders.parameters() if p.requires_grad]
    ddp_params = [p for p in ddp.module.encoders.parameters() if p.requires_grad]
    times = {"per tensor": [], "DDP buckets": []}
    for step in range(steps + 1):  # step 0 warms up (and lets static_graph record its graph)
        dist.barrier()
        started = time.perf_counter()
        plain.zero_grad(set_to_none=True)
        plain().backward()
        for p in params:
            dist.all_reduce(p.grad)
        reference = [p.grad.clone() for p in params]
        middle = time.perf_counter()
        dist.barrier()
        middle_synced = time.perf_counter()
        ddp.zero_grad(set_to_none=True)
        (ddp() * world).backward()  # DDP averages; x world gives the sum, as the trainer does
        done = time.perf_counter()
        if step:
            times["per tensor"].append(middle - started)
            times["DDP buckets"].append(done - middle_synced)
        assert all(torch.allclose(p.grad, r, rtol=1e-5, atol=1e-6) for p, r in zip(ddp_params, reference))
    if rank == 0:
        buckets = ddp._get_ddp_logging_data()["num_buckets_reduced"]  # after DDP rebuilt its buckets (step 1)
        n_params = sum(p.numel() for p in params)
        print(f"{len(params)} gradient tensors, {n_params / 1e6:.1f} M values ({4 * n_params / 2**20:.0f} MiB), "
              f"{world} gloo processes")
        print(f"{'method':<14}{'calls/step':>11}{'s/step (median)':>17}{'range':>18}")
        calls = {"per tensor": len(params), "DDP buckets": buckets}
        for name, values in times.items():
            print(f"{name:<14}{calls[name]:>11}{statistics.median(values):>17.3f}"
                  f"{f'{min(values):.3f}-{max(values):.3f}':>18}")
        ratio = statistics.median(times["per tensor"]) / statistics.median(times["DDP buckets"])
        print(f"DDP buckets are {ratio:.2f}x faster per step (same gradients)")
    distributed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--port", type=int, default=29611, help="a free local TCP port for the process group")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        bert = str(write_random_bert(Path(tmp) / "bert-base"))
        mp.spawn(worker, args=(2, bert, args.steps, args.port), nprocs=2, join=True)


if __name__ == "__main__":
    main()
