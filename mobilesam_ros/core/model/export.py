"""ONNX export of the encoder and the prompt decoder, cached by checkpoint hash.

The ONNX files are the single source of every runtime engine (ONNX Runtime sessions here,
TensorRT engines later). Finding a cached export needs no PyTorch; exporting does, and runs in
a child process (`python -m mobilesam_ros.core.model.export`), so the calling process never
keeps PyTorch's memory (about 1 GB) after a first start.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core import errors
from mobilesam_ros.core.files import exclusive_lock, write_atomically
from mobilesam_ros.core.model.checkpoint import file_sha256
from mobilesam_ros.core.progress import say

_log = logging.getLogger(__name__)

# Bump when the graphs change (inputs, outputs, operators), so stale caches are not reused.
EXPORT_FORMAT_VERSION = 2
ONNX_OPSET = 17
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
)
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")


@dataclass(frozen=True)
class OnnxModels:
    """The three exported graphs of one checkpoint."""

    directory: Path
    encoder: Path
    decoder_single: Path
    decoder_multi: Path

    @classmethod
    def in_directory(cls, directory: Path) -> OnnxModels:
        return cls(
            directory,
            directory / "encoder.onnx",
            directory / "decoder_single.onnx",
            directory / "decoder_multi.onnx",
        )

    def decoder(self, multimask: bool) -> Path:
        return self.decoder_multi if multimask else self.decoder_single

    def all_present(self) -> bool:
        return all(p.is_file() for p in (self.encoder, self.decoder_single, self.decoder_multi))


def export_key(checkpoint_sha256: str) -> str:
    return f"{checkpoint_sha256[:16]}-v{EXPORT_FORMAT_VERSION}"


def export_onnx(
    checkpoint: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    force: bool = False,
    progress: bool = True,
) -> OnnxModels:
    """Return the checkpoint's ONNX graphs, exporting them unless a cached export exists."""
    checkpoint = Path(checkpoint)
    models = OnnxModels.in_directory(Path(cache_dir) / "onnx" / export_key(file_sha256(checkpoint)))
    if models.all_present() and not force:
        return models
    check_export_dependencies()  # here too: a clear error without starting the export process
    models.directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(models.directory / ".lock"):
        if models.all_present() and not force:  # another process finished it meanwhile
            return models
        _export_in_child_process(checkpoint, models, progress)
    return models


# Error types the child reports by name and the parent raises again with the same message.
_REPORTED_ERRORS = {
    cls.__name__: cls
    for cls in (errors.CheckpointError, errors.InvalidInputError, errors.BackendUnavailableError)
}


def _export_in_child_process(checkpoint: Path, models: OnnxModels, progress: bool) -> None:
    """Run `_export_all` in a fresh interpreter: its progress lines become this process's
    progress (`say`); a failure comes back as the child's error type and message."""
    package_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", __name__, str(checkpoint), str(models.directory)]
    if not progress:
        command.append("--quiet")
    # stdout carries only the child's error report (a line); stderr its progress lines, passed
    # on one by one as this process's own progress.
    # A session of its own: a terminal's Ctrl-C, which signals the node's whole process group,
    # does not reach the child; it ends when this process is gone (_end_quietly_on_signals).
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        for line in child.stderr:
            if line.strip():
                say(_log, line.rstrip(), progress)
        output = child.stdout.read()
    if child.returncode == 0:
        return
    if child.returncode in _SIGNALLED_EXIT_CODES:
        raise errors.ExportInterruptedError(
            f"ONNX export of {checkpoint.name} stopped by a signal; the next start exports again"
        )
    report = output.strip().splitlines()
    try:
        error = json.loads(report[-1]) if report else {}
    except json.JSONDecodeError:
        error = {}
    message = error.get("message") or (
        f"the export process ended with exit code {child.returncode} and no error report"
        + (f"; its output: {' '.join(report)[-500:]}" if report else "")
    )
    if error.get("type") == "ImportError":
        raise errors.BackendUnavailableError(
            "exporting the ONNX graphs needs PyTorch, Meta's segment_anything and onnx (pip "
            f"install torch torchvision segment-anything==1.0 onnx): {message}"
        )
    error_type = _REPORTED_ERRORS.get(error.get("type", ""), errors.ExportError)
    raise error_type(f"ONNX export of {checkpoint.name} failed: {message}")


# Modules the one-time export imports, and the pip requirement that brings each (as in
# requirements/ros.txt). Inference from the exported graphs needs none of them.
EXPORT_DEPENDENCIES = (
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("segment_anything", "segment-anything==1.0"),
    ("onnx", "onnx"),
)


def check_export_dependencies() -> None:
    """Raises BackendUnavailableError naming what to pip install when the export cannot run."""
    missing = [
        requirement
        for module, requirement in EXPORT_DEPENDENCIES
        # sys.modules[name] = None marks a module as unimportable.
        if sys.modules.get(module, False) is None or importlib.util.find_spec(module) is None
    ]
    if missing:
        raise errors.BackendUnavailableError(
            "exporting the checkpoint's ONNX graphs (once, then cached) needs "
            f"{', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install {' '.join(repr(r) if '=' in r else r for r in missing)} "
            "(or pip install -r requirements/ros.txt); later starts load the cached graphs "
            "without them"
        )


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _export_all(checkpoint: Path, models: OnnxModels, progress: bool) -> None:
    check_export_dependencies()  # machines that only run cached graphs have no PyTorch
    import torch

    from mobilesam_ros.core.model.modules import load_modules

    _say(progress, f"exporting ONNX graphs of {checkpoint.name} to {models.directory}")
    modules = load_modules(checkpoint)
    steps = [
        ("encoder", models.encoder, lambda p: export_encoder(modules.encoder, p)),
        (
            "decoder (single mask)",
            models.decoder_single,
            lambda p: export_decoder(modules.decoder(multimask=False), p),
        ),
        (
            "decoder (multimask)",
            models.decoder_multi,
            lambda p: export_decoder(modules.decoder(multimask=True), p),
        ),
    ]
    for index, (label, target, export) in enumerate(steps, start=1):
        started = time.perf_counter()
        _say(progress, f"[{index}/{len(steps)}] exporting {label} ...")
        write_atomically(target, export)
        _say(
            progress,
            f"[{index}/{len(steps)}] {label} done in {time.perf_counter() - started:.1f} s",
        )
    meta = {
        "format_version": EXPORT_FORMAT_VERSION,
        "opset": ONNX_OPSET,
        "checkpoint": checkpoint.name,
        "torch": torch.__version__,
    }
    (models.directory / "export.json").write_text(json.dumps(meta, indent=2) + "\n")


def _onnx_export(
    module: object,
    args: tuple,
    path: Path,
    output_shapes: dict[str, list[int | str]],
    **kwargs: object,
) -> None:
    import onnx
    import torch

    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            module,
            args,
            str(path),
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
            output_names=list(output_shapes),
            **kwargs,
        )
    # The tracer leaves output sizes symbolic where a reshape uses -1; declare them, then let
    # the checker's full shape inference confirm they agree with the graph.
    model = onnx.load(str(path))
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims, output_shapes[output.name], strict=True):
            dim.Clear()
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about tracing constants.
        warnings.simplefilter("ignore")
        yield


def export_encoder(encoder: object, path: Path) -> None:
    import torch

    from mobilesam_ros.core.model.constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE, IMAGE_SIZE

    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    _onnx_export(
        encoder,
        (dummy,),
        path,
        {ENCODER_OUTPUT: [1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE]},
        input_names=[ENCODER_INPUT],
    )


def export_decoder(decoder: Any, path: Path) -> None:
    import torch

    from mobilesam_ros.core.model.constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE, LOW_RES_SIZE

    num_prompts, num_points = 2, 3
    args = (
        torch.randn(1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE),
        torch.rand(num_prompts, num_points, 2) * 1024,
        torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]]),
        torch.zeros(1, 1, LOW_RES_SIZE, LOW_RES_SIZE),
        torch.zeros(1),
    )
    dynamic_axes = {
        "point_coords": {0: "num_prompts", 1: "num_points"},
        "point_labels": {0: "num_prompts", 1: "num_points"},
        "mask_input": {0: "num_masks"},
        "has_mask_input": {0: "num_masks"},
        "low_res_masks": {0: "num_prompts"},
        "iou_predictions": {0: "num_prompts"},
    }
    outputs = len(decoder.mask_tokens)
    _onnx_export(
        decoder,
        args,
        path,
        {
            "low_res_masks": ["num_prompts", outputs, LOW_RES_SIZE, LOW_RES_SIZE],
            "iou_predictions": ["num_prompts", outputs],
        },
        input_names=list(DECODER_INPUTS),
        dynamic_axes=dynamic_axes,
    )


# How the child ends when it is signalled (SIGINT or SIGTERM, e.g. by a user or a process
# manager that signals it directly).
_SIGNALLED_EXIT_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}
_PARENT_POLL_S = 0.5


def _end_quietly_on_signals() -> None:
    """SIGINT/SIGTERM end the child through SystemExit: no traceback, and the temporary files of
    write_atomically are removed on the way out. A parent that is gone (a node that left
    without waiting for the export) ends the child the same way."""

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)
    parent = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True).start()


def _main(argv: list[str] | None = None) -> int:
    """Child-process entry point of `_export_in_child_process`."""
    _end_quietly_on_signals()
    parser = argparse.ArgumentParser(description="Export a checkpoint's ONNX graphs (internal).")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    report = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints goes with the progress lines
    try:
        _export_all(args.checkpoint, OnnxModels.in_directory(args.directory), not args.quiet)
    except Exception as exc:
        if not args.quiet:
            traceback.print_exc()
        kind = "ImportError" if isinstance(exc, ImportError) else type(exc).__name__
        print(json.dumps({"type": kind, "message": str(exc)}), file=report, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
