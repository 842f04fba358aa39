"""The equivalent `trtexec` build of an engine, for comparison and profiling."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from mobilesam_ros.core.backends.tensorrt.engine_cache import DEFAULT_WORKSPACE_MIB, ShapeRange


def _shape_list(ranges: Sequence[ShapeRange], which: str) -> str:
    return ",".join(f"{r.name}:{'x'.join(map(str, getattr(r, which)))}" for r in ranges)


def trtexec_command(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    fp16: bool,
    profile: Sequence[ShapeRange] = (),
    fp32_layers: Sequence[str] = (),
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    strongly_typed: bool = False,
) -> str:
    """The trtexec command line that builds the same engine as the Python builder.

    strongly_typed: TensorRT >= 10 builds; `onnx_path` is then the prepared graph (FP16 with
    its FP32 islands as casts), and the precision flags are left out.
    trtexec writes a bare engine without this package's metadata header; it is for
    comparison and profiling, not for the cache.
    """
    parts = [
        "trtexec",
        f"--onnx={os.fspath(onnx_path)}",
        f"--saveEngine={os.fspath(engine_path)}",
        f"--memPoolSize=workspace:{workspace_mib}",
        "--noTF32",
    ]
    if strongly_typed:
        parts.append("--stronglyTyped")
        if profile:
            parts += [f"--{w}Shapes={_shape_list(profile, w)}" for w in ("min", "opt", "max")]
        return " ".join(shlex.quote(part) for part in parts)
    if fp16:
        parts.append("--fp16")
    if profile:
        parts += [f"--{w}Shapes={_shape_list(profile, w)}" for w in ("min", "opt", "max")]
    if fp16 and fp32_layers:
        spec = ",".join(f"{name}:fp32" for name in fp32_layers)
        parts += [
            f"--layerPrecisions={spec}",
            f"--layerOutputTypes={spec}",
            "--precisionConstraints=obey",
        ]
    return " ".join(shlex.quote(part) for part in parts)
