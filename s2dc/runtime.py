"""Process-level set-up of the command-line entry points: glibc malloc tuning, denormals flushed, a lean MONAI import.

glibc hands every freed block above its mmap threshold back to the OS, so each large CPU tensor is
then re-faulted page by page by the kernel; on a 2-core machine this made a Swin encoder forward
pass about 3× slower (``bench/bench_step.py``, docs/benchmarks.md). glibc reads its tuning only at
process start, so the command-line entry points re-execute themselves once with mmap disabled and
trimming off. Values already in the environment are kept; ``S2DC_MALLOC_TUNING=0`` turns this off.

Denormal floats are computed as zero (:func:`flush_denormals`): the masked weights of SwinUNETR's shifted-window
attention are denormal, and Intel cores compute those with a microcode assist (``bench/bench_cpu_kernels.py``).

MONAI's ``__init__`` imports every submodule, and with them, through ``optional_import``, libraries that only
features s2dc never calls through MONAI need (:data:`MONAI_UNUSED_EXTRAS`); a command that trains or probes
imports MONAI without them, about 4 s less per process than a plain ``import monai`` (``bench/bench_startup.py``),
and freezes what it imported out of the garbage collector's reach.
"""

from __future__ import annotations

import gc
import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def reexec_with_tuned_malloc() -> None:
    """Re-run the current command line with :data:`MALLOC_ENV` set (Linux only, at most once)."""
    if sys.platform != "linux" or os.environ.get("S2DC_MALLOC_TUNING", "1") == "0":
        return
    if all(key in os.environ for key in MALLOC_ENV):
        return
    env = {**MALLOC_ENV, **os.environ}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


#: Imported eagerly by MONAI for features s2dc does not use through MONAI: scipy.signal (and the scipy.stats it
#: loads) for the ultrasound confidence map, matplotlib for ``monai.visualize`` and the Jupyter helpers, pandas for
#: the profiling helpers, scikit-learn for the embedding-collapse metric, scipy.optimize for panoptic quality,
#: Optuna for Auto3DSeg's tuning, requests for the TCIA downloads, scipy.ndimage and scipy.spatial for the surface
#: distances, elastic deformations and hole filling, scipy.sparse for the ultrasound confidence map again, and
#: jsonschema for validating bundles. MONAI keeps a stand-in for each that raises if called; s2dc imports them itself
#: where it needs them (figures, tables, sweeps, the twins), normally, after MONAI.
MONAI_UNUSED_EXTRAS = ("scipy.signal", "scipy.stats", "matplotlib", "pandas", "sklearn", "scipy.optimize", "optuna",
                       "requests", "scipy.ndimage", "scipy.spatial", "scipy.sparse", "jsonschema")


def import_monai_lean() -> None:
    """Import MONAI with :data:`MONAI_UNUSED_EXTRAS` hidden (each seen as not installed), unhide them, and freeze
    what was imported (``gc.freeze``)."""
    if "monai" in sys.modules:
        return
    import torch  # noqa: F401  (first and unhindered: only MONAI's optional imports are meant)

    hidden = [name for name in MONAI_UNUSED_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` now raises ImportError
    try:
        import monai  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    # What the import made (~10^6 objects, alive until exit) leaves the garbage collector's walks: each full
    # collection of the run, and the teardown at exit, stop traversing it (a smoke fine-tuning ~0.8 s less of ~8.9 s
    # on the Intel Xeon, docs/benchmarks.md). Garbage made later is collected as before.
    gc.freeze()


def flush_denormals() -> None:
    """Read and write denormal floats as zero on the CPU (``torch.set_flush_denormal``), before any parallel work:
    threads started later (the intra-op pool) inherit it. SwinUNETR masks shifted-window attention with -100, so a
    masked weight is about exp(-100) = 3.7e-44, below float32's smallest normal number (1.2e-38); Intel cores compute
    such values with a microcode assist: ``attention @ values`` 28x slower, a quick CT pretraining of 500 steps 216.5 s
    against 269.3 s on the Intel Xeon of 2026-12-01 (``bench/bench_cpu_kernels.py``). Not free: the last bits of a long
    pretraining change (after 500 steps 126 of the encoder's 134 tensors differed, by at most 3.3e-3), so encoders made
    with and without it differ (docs/benchmarks.md, "CPU kernels")."""
    import torch

    torch.set_flush_denormal(True)
