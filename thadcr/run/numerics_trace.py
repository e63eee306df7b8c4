"""Where do two machines' numbers part? Fingerprints of a run's first steps, op by op.

`trace(run_dir, out)` re-trains a finished run (its `metrics.json` config) for a few optimiser
steps with fresh log-mel and feature caches (the training split's: the trace stops before any
evaluation) and writes one JSON line per event: a header (CPU,
versions, numerics), every module call (sha256 prefixes of its first input and its output), every
gradient before each optimiser step, every parameter after it, and last the calls of torch
operations whose CPU code MKL picks by the processor's vendor (`vendor_dispatched_calls`; empty in
portable numerics). `compare(a, b)` names the first event whose fingerprint differs: the module
that computed differently on the two machines. `thadcr numerics trace` and `thadcr numerics compare`
are the commands; `results/tiny/numerics/` holds the reference traces of the committed-run test's run.
"""

from __future__ import annotations

import collections
import hashlib
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.optim.optimizer as optimizer_hooks
from torch.utils._python_dispatch import TorchDispatchMode

from thadcr import numerics
from thadcr.config import from_dict
from thadcr.errors import UsageError
from thadcr.files import atomic_write_bytes
from thadcr.run.provenance import git_commit, package_versions

# torch operations whose CPU kernels call MKL's vector math (VML: the `vms*`/`vmd*` functions in
# libtorch_cpu) or MKL's DFT, in place and foreach forms included; composite operations that call
# them internally (windows, stft, logsumexp) are listed by name, since a dispatch mode sees only the
# outer call.
VML_OPS = frozenset({"acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sin",
                     "sqrt", "tan", "tanh", "trunc"})
COMPOSITE_OPS = frozenset({"stft", "istft", "hann_window", "hamming_window", "blackman_window", "kaiser_window",
                           "bartlett_window", "logsumexp", "_fft_r2c", "_fft_c2c", "_fft_c2r"})


def _vendor_dispatched(name: str) -> bool:
    base = name.removeprefix("_foreach_").removesuffix("_")
    return base in VML_OPS or name in COMPOSITE_OPS


class _VendorCalls(TorchDispatchMode):
    """Counts the calls of vendor-dispatched operations on CPU floating-point tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if _vendor_dispatched(name) and _on_cpu_float(args):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def _on_cpu_float(args) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
    return any(t.device.type == "cpu" and t.is_floating_point() for t in tensors) or not tensors


@contextmanager
def vendor_dispatched_calls():
    """Within the block, count the CPU calls of operations whose bits depend on the CPU's vendor:
    `with vendor_dispatched_calls() as calls: ...` then `calls` maps operation name -> count."""
    mode = _VendorCalls()
    with mode:
        yield mode.calls


def fingerprint(value) -> str | None:
    """sha256 prefix of a tensor's bytes (the first tensor of a tuple, list or dict), else None."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        return hashlib.sha256(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()[:16]
    if isinstance(value, (tuple, list)) and value:
        return fingerprint(value[0])
    if isinstance(value, dict) and value:
        return fingerprint(next(iter(value.values())))
    return None


class _Enough(Exception):
    """Raised by the optimiser hook after the asked number of steps: ends the traced training."""


def header() -> dict:
    """What a trace's numbers depend on: the CPU, the versions, the numerics set-up and the code's commit."""
    return {"kind": "header", "numerics": numerics.describe(), "versions": package_versions(), "git_commit": git_commit()}


def trace(run_dir: str | Path, out: str | Path, steps: int = 3) -> int:
    """Re-train the finished run in `run_dir` for `steps` optimiser steps and write its trace to `out`
    (atomically); returns the number of events. Applies the run's numerics mode first."""
    run_dir = Path(run_dir)
    if steps < 1:
        raise UsageError(f"--steps {steps}: trace at least 1 optimiser step")
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        raise UsageError(f"{metrics} is missing: trace a finished run's folder (e.g. results/tiny/runs/RUN_ID)")
    config = json.loads(metrics.read_text())["config"]
    numerics.apply(config["numerics"])
    from thadcr.run.train import train  # after numerics.apply: nothing may compute before it

    events: list[dict] = [header()]
    done = {"steps": 0}

    def log(kind: str, name: str, sha) -> None:
        events.append({"i": len(events) - 1, "kind": kind, "name": name, "sha": sha})

    def params(optimizer, kind: str, value) -> None:
        for g, group in enumerate(optimizer.param_groups):
            for k, p in enumerate(group["params"]):
                log(kind, f"group{g}.{k}{tuple(p.shape)}", value(p))

    def after_step(optimizer, args, kwargs) -> None:
        params(optimizer, "param", fingerprint)
        done["steps"] += 1
        if done["steps"] >= steps:
            raise _Enough

    handles = [
        torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: log("forward", type(m).__name__, [fingerprint(i), fingerprint(o)])),
        torch.nn.modules.module.register_module_full_backward_hook(
            lambda m, gi, go: log("backward", type(m).__name__, [fingerprint(go), fingerprint(gi)])),
        optimizer_hooks.register_optimizer_step_pre_hook(
            lambda o, a, k: params(o, "grad", lambda p: fingerprint(p.grad) if p.grad is not None else None)),
        optimizer_hooks.register_optimizer_step_post_hook(after_step),
    ]
    try:
        with tempfile.TemporaryDirectory() as tmp, vendor_dispatched_calls() as calls:
            config.update(epochs=1, max_steps_per_epoch=steps, cache_dir=str(Path(tmp) / "cache"))
            try:
                train(from_dict(config), Path(tmp) / "run", progress=False)
            except _Enough:
                pass
            events.append({"i": len(events) - 1, "kind": "vendor_dispatched_calls", "name": "all",
                           "sha": dict(sorted(calls.items()))})
    finally:
        for handle in handles:
            handle.remove()
    atomic_write_bytes(Path(out), "".join(json.dumps(e) + "\n" for e in events).encode())
    return len(events) - 1


def read(path: str | Path) -> tuple[dict, list[dict]]:
    """A trace file -> (header, events)."""
    lines = Path(path).read_text().splitlines()
    if not lines or json.loads(lines[0]).get("kind") != "header":
        raise UsageError(f"{path} is not a thadcr numerics trace (its first line is not a header); "
                         "make one with `thadcr numerics trace`")
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def compare(a: str | Path, b: str | Path) -> dict | None:
    """The first event at which traces a and b differ, as {"index", "a", "b", "previous"} (None: identical)."""
    (_, ea), (_, eb) = read(a), read(b)
    for index, (x, y) in enumerate(zip(ea, eb)):
        if x != y:
            return {"index": index, "a": x, "b": y, "previous": ea[index - 1] if index else None}
    if len(ea) != len(eb):
        index = min(len(ea), len(eb))
        return {"index": index, "a": ea[index] if index < len(ea) else None,
                "b": eb[index] if index < len(eb) else None, "previous": ea[index - 1] if index else None}
    return None


def describe_difference(a: str | Path, b: str | Path) -> str:
    """A reader's account of `compare(a, b)`: which CPUs, and the first operation that differs."""
    (ha, _), (hb, _) = read(a), read(b)
    cpus = [f"{Path(p).name}: {h['numerics']['cpu']['model']} ({h['numerics']['cpu']['vendor']}), numerics "
            f"{h['numerics']['mode']}, torch {h['versions'].get('torch')}" for p, h in ((a, ha), (b, hb))]
    first = compare(a, b)
    if first is None:
        return "\n".join(cpus + ["identical: every fingerprint agrees"])
    event = first["a"] or first["b"]
    where = f"{event['kind']} of {event['name']}"
    before = first["previous"]
    after = f" (after {before['kind']} of {before['name']}, which agrees)" if before else ""
    return "\n".join(cpus + [f"first difference at event {first['index']}: {where}{after}",
                             f"  a: {json.dumps(first['a'])}", f"  b: {json.dumps(first['b'])}"])
