"""Every thread pool a process that runs the model uses, pinned once to what its lanes own.

A lane is one batch in flight on one core. ONNX Runtime runs a lane with its session's intra-op threads, and
torch with its own pool; both are set where the engine is built (`cpu_threads`, the worker's
PARTSIGHT_LANE_THREADS). What nobody pinned is the
pools the libraries bring: OpenBLAS (numpy), OpenMP (scikit-learn, torch), MKL or BLIS where installed. Left
alone, OpenBLAS starts one thread per core and splits every gallery and head product across them, so on a
2-core box the answer path of one lane fought both lanes' model threads for the cores (measured in
docs/performance.md). Pinned, a matrix product runs on the thread that asks for it.

`pin_thread_pools` is called once at start-up, and again after a model load (a library loaded by then, such as
scikit-learn's OpenMP, is pinned too); the environment variables cover libraries loaded later and child
processes. Pillow's JPEG decoder runs on the calling thread and has no pool.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from threadpoolctl import threadpool_info, threadpool_limits

# read by OpenBLAS, OpenMP runtimes, MKL, BLIS, Apple's Accelerate and numexpr when they load
POOL_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def pin_environment(threads: int, env: MutableMapping[str, str] | None = None) -> None:
    """Each library pool's variable set to `threads`, for libraries that load after this and child processes."""
    env = os.environ if env is None else env
    for name in POOL_VARIABLES:
        env[name] = str(threads)


def pin_thread_pools(threads: int) -> dict[str, int]:
    """Every pool loaded in this process limited to `threads` (and the variables set for those loaded later);
    returns each pool's size now, by library, for the start-up log."""
    if threads < 1:
        raise ValueError(f"a lane owns at least one thread, got {threads}")
    pin_environment(threads)
    threadpool_limits(limits=threads)  # not as a context manager: the limit stays for the process's life
    torch = sys.modules.get("torch")  # only where torch is loaded already: a worker on ONNX never imports it
    if torch is not None:
        torch.set_num_threads(threads)
    return pool_sizes()


def pool_sizes() -> dict[str, int]:
    """The size of every native thread pool loaded in this process, by library (openblas, openmp, mkl, ...);
    torch's own pool as `torch`."""
    sizes = {str(pool["internal_api"]): int(pool["num_threads"]) for pool in threadpool_info()}
    torch = sys.modules.get("torch")
    if torch is not None:
        sizes["torch"] = int(torch.get_num_threads())
    return sizes
