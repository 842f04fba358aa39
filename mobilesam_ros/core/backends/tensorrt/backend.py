"""TensorRT backend entry point: export the ONNX graphs, ensure the engines, load them.

The work is split by concern: `compat` (which TensorRT and cuda-python, version checks, API
spellings), `graph_prep` (constant folding, mixed-precision graphs), `build` (networks,
precision policy, engine building and cache, self-check escalation) and `runtime` (engines,
contexts, GPU buffers, `TensorRtBackend`).
"""

from __future__ import annotations

import os
from pathlib import Path

from mobilesam_ros.core.backends.tensorrt.build import check_workspace, ensure_engines, open_gpu
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    DEFAULT_MAX_PROMPTS,
    DEFAULT_WORKSPACE_MIB,
    DecoderProfile,
)
from mobilesam_ros.core.backends.tensorrt.runtime import TensorRtBackend
from mobilesam_ros.core.choices import DEFAULT_PRECISION


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
    open_gpu(device, precision, max_prompts)  # fail fast, before the export and the build
    from mobilesam_ros.core.model.export import export_onnx

    models = export_onnx(checkpoint, Path(cache_dir), progress=progress)
    engines = ensure_engines(
        models,
        cache_dir,
        device,
        precision,
        max_prompts,
        force_rebuild,
        progress,
        workspace_mib=workspace_mib,
    )
    return TensorRtBackend(engines.engines, DecoderProfile(max_prompts), device, precision)
