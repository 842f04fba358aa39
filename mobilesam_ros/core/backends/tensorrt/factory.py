"""TensorRT backend entry point: open the GPU, export the ONNX graphs, ensure the engines.

The work is split by concern: `compat` (which TensorRT and cuda-python, version checks, API
spellings), `fp32_policy` (which layers an FP16 build keeps in FP32), `graph_prep` (constant
folding, mixed-precision graphs), `build` (one engine: prepared graph, network, builder
settings), `engine_set` (the three engines: GPU, cache lookup, self-checked build),
`engine_cache` (cache keys and engine files), `self_check`, `trtexec` (the equivalent
command line) and `backend` (engines, contexts, GPU buffers: `TensorRtBackend`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mobilesam_ros.core.backends.tensorrt.backend import EngineLoadError, TensorRtBackend
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    DEFAULT_MAX_PROMPTS,
    DEFAULT_WORKSPACE_MIB,
)
from mobilesam_ros.core.backends.tensorrt.engine_set import (
    check_workspace,
    ensure_engines,
    open_gpu,
)
from mobilesam_ros.core.choices import DEFAULT_PRECISION
from mobilesam_ros.core.progress import say

_log = logging.getLogger(__name__)


def create_tensorrt_backend(
    checkpoint: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
    max_prompts: int = DEFAULT_MAX_PROMPTS,
    force_rebuild: bool = False,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> TensorRtBackend:
    """Export (or find) the ONNX graphs, ensure the engines, and load them.

    max_prompts: most prompts per decoder call; the decoder profile, both decoder contexts and
      the input/output buffers are sized for it (larger calls are split).
    workspace_mib: the builder's scratch memory limit.
    """
    check_workspace(workspace_mib)
    target = open_gpu(device, precision, max_prompts)  # fail fast, before the export and build
    from mobilesam_ros.core.model.export import export_onnx

    models = export_onnx(checkpoint, Path(cache_dir), progress=progress)
    engines = ensure_engines(
        target, models, cache_dir, force_rebuild, progress, workspace_mib=workspace_mib
    )
    try:
        return TensorRtBackend(engines.engines, target.profile, device, precision)
    except EngineLoadError as exc:
        if engines.built:  # built and self-checked just now: building again would not help
            raise
        # Valid bytes for this key that TensorRT still refuses (e.g. a TensorRT or driver
        # update under the same version label): the entry goes, and is built once more.
        say(_log, f"{exc}; deleting the cached {exc.graph} engine and building it again", progress)
        engines.paths[exc.graph].unlink(missing_ok=True)
        engines = ensure_engines(target, models, cache_dir, False, progress, workspace_mib)
        return TensorRtBackend(engines.engines, target.profile, device, precision)
