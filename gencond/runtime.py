"""Process-wide settings that make CPU training faster, forked CPU workers, and what the
CPU can do (model and vector instruction sets, which decide how fast its kernels run).

glibc's malloc hands large blocks (above a threshold that grows to at most 32 MB) back
to the kernel the moment they are freed, and trims the heap top above 128 KB. A training
step frees and reallocates the same activation tensors every iteration, so each step
then pays page faults and page zeroing for all of them: on 2 cores this took a third of
the DiM phase-1 step (3.9 s -> 2.2 s per step at width 196 with the fix below, system
time 16 s -> 3 s over 5 steps). Raising both thresholds keeps freed memory in the
process for reuse. Peak memory is unchanged; memory is just not returned between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import platform
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import torch

from gencond.errors import GencondError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_PR_SET_PDEATHSIG = 1
_KEEP_BYTES = 1 << 30
_configured = False


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator whose stream depends on (seed, keys) only (non-negative keys), mixed
    by NumPy's SeedSequence so nearby seeds and keys give unrelated streams."""
    state = np.random.SeedSequence([seed % 2**64, *keys]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed blocks below 1 GiB in the process (idempotent).

    Does nothing off Linux/glibc or when ``GENCOND_KEEP_FREED_MEMORY=0``. Returns whether
    the setting is in effect."""
    global _configured
    if _configured:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("GENCOND_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _configured = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    return _configured


_task: Callable[[int], Any] | None = None  # the task forked workers run (inherited, never pickled)


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile")


def cpu_description() -> dict:
    """The CPU's model name, which of ``CPU_FLAGS`` it has (Linux: /proc/cpuinfo; empty
    elsewhere) and the vector level torch's kernels were dispatched to: timings of one
    code differ by 2x between machines that differ here."""
    model, flags = "", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def native_bf16(device: torch.device) -> bool | None:
    """Whether ``device`` runs bf16 natively: a CUDA GPU with bf16 units (not emulation),
    or a CPU with AVX-512 BF16 or AMX (its /proc/cpuinfo flags; oneDNN's own check, used
    where no flags can be read, also says yes for plain AVX-512, whose bf16 is emulated);
    None where that cannot be told."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument counts no emulation
            return torch.cuda.is_bf16_supported()
    flags = set(cpu_description()["cpu_flags"])
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


# The values of every mixed-precision setting (``mixed_precision`` of generator training, of
# evaluation networks and of DM's real forward): Accelerate's words, plus auto.
PRECISIONS = ("no", "bf16", "fp16", "auto")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(setting: str, value: str) -> None:
    """One line naming ``setting`` unless ``value`` is one of :data:`PRECISIONS`."""
    if value not in PRECISIONS:
        raise GencondError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {value!r}")


def resolve_precision(mixed_precision: str, device: torch.device) -> str:
    """``auto`` becomes ``bf16`` where ``device`` runs bf16 natively and ``no`` elsewhere
    (emulated bf16 ran a DiM step 27-31x slower than fp32 on a CPU without it); ``no``,
    ``bf16`` and ``fp16`` stay as they are."""
    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if native_bf16(device) else "no"


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for a resolved precision (``no``: disabled)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.bfloat16),
                          enabled=precision in AUTOCAST_DTYPES)


def slow_precision_warning(precision: str, device: torch.device, setting: str = "mixed_precision") -> str | None:
    """A line for autocast (``setting``'s value ``precision``) that a CPU emulates: bf16
    without AVX-512 BF16 or AMX (a DiM step ran 27-31x slower than fp32 on such a CPU:
    ``experiments/speed_vs_official/``), fp16 without AVX-512 FP16 or AMX-FP16; None where the
    precision is native or not asked for."""
    if device.type != "cpu" or precision not in AUTOCAST_DTYPES:
        return None
    if precision == "bf16" and native_bf16(device) is not False:
        return None
    if precision == "fp16" and {"avx512_fp16", "amx_fp16"} & set(cpu_description()["cpu_flags"]):
        return None
    units = "AVX-512 BF16 or AMX" if precision == "bf16" else "AVX-512 FP16 or AMX-FP16"
    return (f"warning: {setting} {precision} on a CPU without native {precision} (no {units}) is emulated and "
            f"far slower than fp32; use {setting}: no or auto on this machine")


def cuda_settings(device: torch.device, tf32: bool) -> None:
    """TF32 for fp32 matrix products and convolutions on CUDA (a 10-bit mantissa on the
    tensor cores, several times fp32's rate on Ampere and later; bf16 autocast regions are
    unaffected). Process-wide torch flags, set only for a CUDA device: on a CPU nothing changes."""
    if device.type != "cuda":
        return
    # torch's long-standing calls: on torch >= 2.9, setting the per-backend fp32_precision instead
    # makes torch.get_float32_matmul_precision() (which Inductor and others call) raise
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a GPU runs asynchronously), so a timer read after
    this counts it; nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_options(device: torch.device, fused: bool) -> dict:
    """Keyword arguments for torch's Adam, AdamW and SGD: ``fused`` (one kernel updates
    every parameter) on CUDA where asked; elsewhere the default (foreach) implementation,
    so CPU runs stay bitwise what they were."""
    return {"fused": True} if fused and device.type == "cuda" else {}


def _run_task(index: int) -> tuple[int, Any]:
    return index, _task(index)


def _start_worker(threads: int, parent: int) -> None:
    """A forked worker: its share of the threads, and (Linux) a SIGKILL when its parent dies,
    so a parent killed with -9 leaves no workers behind holding its files and locks."""
    torch.set_num_threads(threads)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG,
                                                                                             signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)


def forked_map(task: Callable[[int], Any], count: int, workers: int) -> Iterator[tuple[int, Any]]:
    """``(i, task(i))`` for every ``i < count``: in order in this process when ``workers``
    is 1, else in finishing order from ``workers`` forked processes sharing this process's
    threads (each gets ``threads // workers``, at least 1).

    Small networks use two cores poorly from one process (a ConvNet-3 step at batch 256 is
    too short to split), so independent evaluation networks go faster side by side. The
    workers are forked, so ``task`` may close over anything (lambdas, loaded generators);
    only its results are pickled. CPU only: CUDA cannot run in a forked child. A task's
    exception is raised here, after the tasks already running have finished."""
    global _task
    if workers <= 1:
        for index in range(count):
            yield index, task(index)
        return
    _task = task
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                               initargs=(max(1, torch.get_num_threads() // workers), os.getpid()))
    try:
        for future in as_completed([pool.submit(_run_task, index) for index in range(count)]):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _task = None
