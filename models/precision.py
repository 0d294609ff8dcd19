"""`optim.precision`: what `auto` means on this machine, measured once and cached.

On CUDA, `auto` is bf16 where the GPU supports it. On a CPU it is whichever of fp32 and bf16
autocast runs a linear layer of SmolLM2-135M's size faster (statistics pass / pure choice /
cached answer, as in fila.py):

    time_linear       one [tokens x 576] @ [576 x 1536] matmul (the MLP's up projection of
                      SmolLM2-135M on 512 tokens), fp32 and bf16-autocast runs interleaved,
                      median of a few repeats; about a second in all
    choose            bf16 only if its median is at least BF16_MARGIN faster (ties keep fp32's
                      exact numerics)
    auto_precision    the cached answer for (CPU model, torch version), measured on first use;
                      the figures go to the log and into the cache file

Whether a CPU has bf16 instructions does not say which is faster: on a Xeon with AVX512-BF16
but no AMX, bf16 ran at half fp32's speed, while on a Zen 5 EPYC it ran ~4x faster.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..files import json_digest, write_json_atomic

PRECISIONS = ("auto", "bf16", "fp32")
RESOLVED = ("bf16", "fp32")
BENCH_SHAPE = (512, 576, 1536)   # tokens, SmolLM2-135M hidden size, its MLP width
BENCH_REPEATS = 5
BF16_MARGIN = 1.1                # bf16 must be this many times faster than fp32 to be chosen
_MEMO: dict[str, "PrecisionChoice"] = {}


@dataclass
class PrecisionChoice:
    precision: str                                        # "bf16" or "fp32"
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # median seconds per matmul
    gflops: dict[str, float] = field(default_factory=dict)
    machine: str = ""
    torch: str = ""


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise ConfigError(f"optim.precision: {value!r} is not a precision; valid: {list(PRECISIONS)}")
    return value


def cpu_model() -> str:
    """'model name (family F model M)' from /proc/cpuinfo: a VM may show only 'AMD EPYC', and
    Zen 3 and Zen 5 differ on exactly this question."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    info = {}
    for line in lines:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return f"{info.get('model name', platform.machine())} (family {info.get('cpu family', '?')} " \
           f"model {info.get('model', '?')})"


def cpu_has_native_bf16() -> bool:
    """True if the CPU has bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def legacy_auto() -> str:
    """What `auto` meant before it measured (bf16 on CUDA with bf16 and on CPUs with bf16
    instructions): runs cached then were made with this precision (see `hashed_precision`)."""
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def time_linear(shape: tuple[int, int, int] = BENCH_SHAPE, repeats: int = BENCH_REPEATS) -> dict[str, float]:
    """Median seconds of one fp32 and one bf16-autocast linear layer of `shape` on the CPU. The two
    are interleaved so that a neighbour's load hits both alike; an emulated bf16 (100x slower)
    stops after its first run."""
    import torch

    tokens, d_in, d_out = shape
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(tokens, d_in, generator=gen), torch.randn(d_out, d_in, generator=gen)

    def once(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            torch.nn.functional.linear(x, w).float().sum().item()
        return time.perf_counter() - started

    once(False), once(True)  # warm-up: first-call allocation and kernel selection
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        times["fp32"].append(once(False))
        times["bf16"].append(once(True))
        if times["bf16"][-1] > 20 * max(times["fp32"]):
            break  # clearly emulated; more repeats would only cost time
    return {name: statistics.median(values) for name, values in times.items()}


def choose(seconds: dict[str, float], margin: float = BF16_MARGIN) -> str:
    """The faster precision: bf16 only if its time is at least `margin` times below fp32's."""
    missing = [p for p in RESOLVED if p not in seconds]
    if missing:
        raise ValueError(f"timings for {missing} are missing (have {sorted(seconds)})")
    return "bf16" if seconds["bf16"] * margin <= seconds["fp32"] else "fp32"


def machine_key() -> tuple[str, str]:
    import torch

    return cpu_model(), torch.__version__


def auto_precision(cache_dir: str | Path | None = None, measure=time_linear, log=print) -> PrecisionChoice:
    """What `precision: auto` means here: bf16 on a CUDA GPU that supports it; on a CPU the
    cached outcome of `measure` for this CPU model and torch version (measured on first use)."""
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return PrecisionChoice("bf16" if bf16 else "fp32", f"CUDA ({'with' if bf16 else 'without'} bf16 support)")
    if cache_dir is None:
        from .catalog import cache_root

        cache_dir = cache_root() / "precision"
    machine, version = machine_key()
    path = Path(cache_dir) / f"{json_digest([machine, version], length=16)}.json"
    if str(path) in _MEMO:
        return _MEMO[str(path)]
    if path.is_file():
        choice = PrecisionChoice(**_read(path))
    else:
        seconds = measure()
        flops = 2 * BENCH_SHAPE[0] * BENCH_SHAPE[1] * BENCH_SHAPE[2]
        gflops = {p: round(flops / s / 1e9, 1) for p, s in seconds.items()}
        picked = choose(seconds)
        choice = PrecisionChoice(
            picked, f"measured: linear {BENCH_SHAPE[0]}x{BENCH_SHAPE[1]}x{BENCH_SHAPE[2]}, fp32 {gflops['fp32']} "
                    f"GFLOP/s, bf16 autocast {gflops['bf16']} GFLOP/s", {p: round(s, 6) for p, s in seconds.items()},
            gflops, machine, version)
        write_json_atomic(path, asdict(choice))
        log(f"precision auto -> {picked} on {machine}, torch {version} ({choice.reason}); cached in {path}")
    _MEMO[str(path)] = choice
    return choice


def _read(path: Path) -> dict:
    import json

    data = json.loads(path.read_text())
    if data.get("precision") not in RESOLVED:
        raise ConfigError(f"{path}: cached precision {data.get('precision')!r} is not one of {list(RESOLVED)}; "
                          "delete the file to measure again")
    return data


def resolve_precision(requested: str, log=print) -> str:
    """'bf16' or 'fp32' for an `optim.precision` value."""
    check_precision(requested)
    return auto_precision(log=log).precision if requested == "auto" else requested


def hashed_precision(requested: str, resolved: str | None = None) -> str:
    """The spelling of the precision in a run's cache hash (training/cache.py). Runs cached before
    `auto` measured were hashed with the literal value, and `auto` then meant `legacy_auto()`; so
    the precision a run will use is spelled `auto` when it equals what `auto` meant then, and by
    its name otherwise. Pinning `fp32` in a config that said `auto`, on a machine where `auto`
    meant fp32, keeps its hash (its cached run was fp32); on a machine where `auto` meant bf16 it
    does not (its cached run was bf16). One spelling is one precision on a given machine."""
    check_precision(requested)
    legacy = legacy_auto()
    if requested == "bf16":
        return "bf16"   # as hashed before
    if requested == "fp32":
        return "auto" if legacy == "fp32" else "fp32"
    resolved = resolved or resolve_precision(requested, log=lambda *_: None)
    return "auto" if resolved == legacy else resolved
