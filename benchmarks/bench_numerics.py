"""What portable numerics cost: one training step of the tiny profile under each CPU setting.

Each setting runs in its own process (a process chooses its kernels once, at its first
computation), one after the other, one thread each, on the same synthetic batch of 16 (log-mels
and captions; the text features computed once, as a frozen-text run does). For DP (HTS-AT),
THA+DCR and DP (ResNet38) it times the mean of `--steps` `thadcr.run.train.train_step` calls after 2
warm-up steps and prints seconds per step and the ratio to native:

- native: the machine's fastest kernels (ATen's best level, MKL's own path, oneDNN);
- scalar + MKL COMPATIBLE: ATen's DEFAULT kernels, MKL's vendor-neutral path, no oneDNN/NNPACK;
- portable: thadcr's mode (`thadcr.numerics.PORTABLE_ENV`: ATen AVX2, MKL COMPATIBLE, no oneDNN/NNPACK);
- AVX2 + MKL AVX2 (Intel only): MKL's faster AVX2 branch, reproducible on Intel CPUs only.

    .venv/bin/python benchmarks/bench_numerics.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "native": None,
    "scalar + MKL COMPATIBLE": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
    "portable (thadcr)": "portable",
    "AVX2 + MKL AVX2 (Intel only)": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
}
MODELS = {"DP": {"variant": "DP"}, "THA+DCR": {"variant": "THA+DCR"},
          "DP (ResNet38)": {"variant": "DP", "audio_encoder": "resnet38"}}
BATCH = 16


def worker(setting: str, steps: int) -> dict[str, float]:
    """Seconds per training step of each model in this process (its environment chose the kernels)."""
    import torch

    from thadcr import numerics

    if SETTINGS[setting] == "portable":
        numerics.apply("portable")
    elif SETTINGS[setting] is not None:
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(1)
    from thadcr.config import make_config
    from thadcr.run.distributed import Distributed
    from thadcr.run.evaluation import frames_per_clip, front_end
    from thadcr.model.retrieval import build_model
    from thadcr.model.text import TextFeatureCache
    from thadcr.run.train import adam, train_step

    generator = torch.Generator().manual_seed(0)
    captions = [f"a sound number {i} and a dog barks twice near a running engine" for i in range(BATCH)]
    times = {}
    for name, values in MODELS.items():
        config = make_config("tiny", {**values, "audio_checkpoint": None, "numerics": "native"})
        logmel = torch.randn(BATCH, frames_per_clip(config, front_end(config)), 64, generator=generator)
        torch.manual_seed(0)
        model, world = build_model(config).train(), Distributed("cpu")
        text = TextFeatureCache(model.text_encoder, captions, world.device)(torch.arange(BATCH))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = adam(params, config.lr)
        for step in range(2 + steps):
            if step == 2:
                started = time.perf_counter()
            train_step(model, world, optimizer, params, logmel, text, torch.arange(BATCH), config.grad_clip)
        times[name] = (time.perf_counter() - started) / steps
    times["aten"] = torch.backends.cpu.get_cpu_capability()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps)))
        return
    from thadcr.numerics import cpu

    results = {}
    for setting, env in SETTINGS.items():
        extra = env if isinstance(env, dict) else {}
        child = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
        child.update({**extra, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        done = subprocess.run([sys.executable, __file__, "--worker", setting, "--steps", str(args.steps)],
                              env=child, capture_output=True, text=True, check=True)
        results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{cpu()['model']}; batch {BATCH}, one thread, mean of {args.steps} steps after 2")
    print(f"{'setting':<30}{'ATen':>8}" + "".join(f"{name:>20}" for name in MODELS))
    native = results["native"]
    for setting, times in results.items():
        cells = "".join(f"{times[m]:>10.3f} s ({times[m] / native[m]:.1f}x)" for m in MODELS)
        print(f"{setting:<30}{times['aten']:>8}{cells}")


if __name__ == "__main__":
    main()
