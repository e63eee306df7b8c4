"""thadcr.numerics: in the portable mode a short training run gives bit-identical weights and
metrics on this CPU and on an emulated CPU one instruction-set level lower (issue 13).

Every run is a fresh process: the mode has to be in place before torch chooses its kernels. The
emulation lowers the level ATen, MKL and oneDNN use (these variables can cap it, never raise it);
the native-mode control shows that the emulation and the workload are sensitive enough to fail.
Run as a script, this file is the worker: `python test_numerics.py MODE DATA_ROOT OUT`.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thadcr import numerics
from thadcr.errors import UsageError

# the environment of a CPU one level below this one's highest, by the highest level this one has
EMULATE_LOWER = {
    "avx512f": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
MACHINE_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "MKL_NUM_THREADS")
VARIANTS = ("DP", "THA+DCR")  # DP: HTS-AT + MiniLM + NT-Xent; THA+DCR adds THA, the factors, L_D, L_A and CA
EARLY_MATMUL = "import torch; torch.ones(4, 4) @ torch.ones(4, 4)"  # ATen and MKL choose their kernels here
PORTABLE_ATEN = numerics.PORTABLE_ENV["ATEN_CPU_CAPABILITY"].upper()  # as get_cpu_capability() names it


def worker(mode: str, data_root: str, out: Path) -> None:
    """Train each variant a few steps on data_root (log-mels and text features computed here),
    test it, and write the weights' digest, the test metrics and `describe()` to out/result.json."""
    numerics.apply(mode)  # before anything computes
    import torch

    from thadcr.config import make_config
    from thadcr.run.train import train

    result = {"numerics": numerics.describe()}
    for variant in VARIANTS:
        values = {"data_root": data_root, "layout": "clotho", "clip_seconds": 1.0, "batch_size": 8, "epochs": 1,
                  "max_steps_per_epoch": 4, "eval_batch": 8, "cache_dir": str(out / "cache"), "variant": variant,
                  "numerics": mode}
        metrics = train(make_config("tiny", values), out / variant, progress=False)
        weights = torch.load(out / variant / "last.pt", map_location="cpu", weights_only=True)["model"]
        digest = hashlib.sha256()
        for name in sorted(weights):
            digest.update(name.encode() + weights[name].contiguous().numpy().tobytes())
        result[variant] = {"weights": digest.hexdigest(), "test": metrics["test"]}
    (out / "result.json").write_text(json.dumps(result))


def _host_env() -> dict[str, str]:
    """This environment without settings that choose kernels, and one intra-op thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in MACHINE_ENV}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _lower_machine() -> dict[str, str]:
    flags = numerics.cpu()["vector_extensions"]
    for flag, env in EMULATE_LOWER.items():
        if flag in flags:
            return env
    pytest.skip("this CPU has neither AVX2 nor AVX-512: there is no lower level to emulate")


def _run_pair(mode: str, data_root: Path, tmp: Path) -> dict[str, dict]:
    """The worker in `mode` on this machine and on the emulated lower one, both at once."""
    lower = _lower_machine()
    runs = {}
    for machine, extra in (("host", {}), ("lower", lower)):
        out = tmp / f"{mode}-{machine}"
        out.mkdir()
        runs[machine] = (out, subprocess.Popen(
            [sys.executable, __file__, mode, str(data_root), str(out)], env={**_host_env(), **extra},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    results = {}
    for machine, (out, process) in runs.items():
        log = process.communicate(timeout=600)[0]
        assert process.returncode == 0, f"{mode} worker on the {machine} machine failed:\n{log[-3000:]}"
        results[machine] = json.loads((out / "result.json").read_text())
    return results


@pytest.mark.slow
def test_portable_runs_are_bit_identical_on_an_emulated_lower_cpu(synthetic_clotho, tmp_path):
    runs = _run_pair("portable", synthetic_clotho, tmp_path)
    for machine in ("host", "lower"):
        described = runs[machine]["numerics"]
        assert described["mode"] == "portable" and described["aten_cpu_capability"] == PORTABLE_ATEN
        assert not described["mkldnn"] and not described["nnpack"] and described["torch_threads"] == 1
    for variant in VARIANTS:
        assert runs["host"][variant]["weights"] == runs["lower"][variant]["weights"], variant
        assert runs["host"][variant]["test"] == runs["lower"][variant]["test"], variant  # exact, no tolerance


@pytest.mark.slow
def test_native_runs_differ_on_the_emulated_lower_cpu(synthetic_clotho, tmp_path):
    """The control: without the mode the same two processes differ, so the test above can fail."""
    runs = _run_pair("native", synthetic_clotho, tmp_path)
    capability = {machine: runs[machine]["numerics"]["aten_cpu_capability"] for machine in runs}
    assert capability["host"] != capability["lower"] == _lower_machine()["ATEN_CPU_CAPABILITY"].upper()
    assert any(runs["host"][v]["weights"] != runs["lower"][v]["weights"] for v in VARIANTS)


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # the tests read the return code


def test_describe_reports_the_mode_and_the_cpu():
    done = _python("import json; from thadcr import numerics; numerics.apply('portable'); "
                   "print(json.dumps(numerics.describe()))", env=_host_env())
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    assert described["mode"] == "portable" and described["aten_cpu_capability"] == PORTABLE_ATEN
    assert described["mkl_branch"] in ("COMPATIBLE", None) and described["torch_threads"] == 1
    assert described["env"]["ATEN_CPU_CAPABILITY"] == numerics.PORTABLE_ENV["ATEN_CPU_CAPABILITY"] and described["env"]["MKL_CBWR"] == "COMPATIBLE"
    cpu = described["cpu"]
    assert cpu == numerics.cpu() and cpu["model"]
    if Path("/proc/cpuinfo").is_file():
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        assert cpu["model"] == models[0]
    if cpu["architecture"] == "x86_64":
        assert {"sse", "sse2"} <= set(cpu["vector_extensions"])


def test_portable_refuses_a_process_that_already_computed():
    native = _python(f"{EARLY_MATMUL}; print(torch.backends.cpu.get_cpu_capability())", env=_host_env())
    if native.stdout.strip() == PORTABLE_ATEN:
        pytest.skip("this CPU's own ATen kernels are the portable ones: nothing to refuse")
    done = _python(f"{EARLY_MATMUL}; from thadcr import numerics; numerics.apply('portable')", env=_host_env())
    assert done.returncode != 0 and "NumericsError" in done.stderr
    assert "before any torch computation" in done.stderr and f"ATEN_CPU_CAPABILITY={numerics.PORTABLE_ENV['ATEN_CPU_CAPABILITY']}" in done.stderr


def test_a_child_started_with_the_portable_environment_is_portable_from_its_first_computation():
    env = numerics.environment("portable", base=_host_env())
    done = _python(f"{EARLY_MATMUL}; from thadcr import numerics; numerics.apply('portable'); "
                   "print(numerics.describe()['aten_cpu_capability'], torch.get_num_threads())", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [PORTABLE_ATEN, str(numerics.PORTABLE_THREADS)]
    back = numerics.environment("native", base=env)
    assert not set(numerics.PORTABLE_ENV) & set(back) and back["PATH"] == env["PATH"]


def test_unknown_mode_is_refused():
    with pytest.raises(UsageError, match="portable, native"):
        numerics.apply("fast")


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
