"""The device memory of the decoder programs, accounted on the CPU.

The programs' own code runs on PyTorch's "meta" device (shapes and dtypes, no data) while every
tensor storage it creates is tracked until it is released: building a program gives its static
buffers, running its bodies gives what their capture would take from the graph pool (the peak,
and what stays held afterwards). Nothing here repeats the programs' shapes as a formula of its
own, so these figures follow any change to the buffers. Not covered: memory the CUDA kernels and
libraries take for themselves (cuBLAS workspaces, the CUDA context) and the allocator's rounding.

`python -m mobilesam_ros.core.backends.torch_device.memory` prints the figures for a camera size.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import weakref
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mobilesam_ros.core.backends.torch_device.pipeline import MAX_DECODER_GRAPHS, DevicePipeline
from mobilesam_ros.core.backends.torch_device.programs import prompt_bucket
from mobilesam_ros.core.model.modules import PromptDecoder, build_mask_decoder, build_prompt_encoder
from mobilesam_ros.core.processing.preprocess import FrameGeometry

_HOST = "cpu"  # on a GPU, the host buffers are pinned


class AllocationTracker(TorchDispatchMode):
    """Every tensor storage created under it: sizes by device, bytes alive and the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.allocations: list[tuple[str, int]] = []  # (device type, bytes) in order
        self.live: defaultdict[str, int] = defaultdict(int)  # by device type
        self.peak: defaultdict[str, int] = defaultdict(int)
        self._storages: dict[int, list[Any]] = {}  # storage -> [tensors alive, device, bytes]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        # Outputs on an input's storage (views, in-place and out= results) allocate nothing.
        inputs = {_storage_key(t) for t in _tensors((args, kwargs))}
        out = func(*args, **kwargs)
        for tensor in _tensors(out):
            key = _storage_key(tensor)
            entry = self._storages.get(key)
            if entry is None:
                if key in inputs:
                    continue
                device, nbytes = tensor.device.type, tensor.untyped_storage().nbytes()
                entry = self._storages[key] = [0, device, nbytes]
                self.allocations.append((device, nbytes))
                self.live[device] += nbytes
                self.peak[device] = max(self.peak[device], self.live[device])
            entry[0] += 1
            weakref.finalize(tensor, self._release, key)
        return out

    def _release(self, key: int) -> None:
        entry = self._storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live[entry[1]] -= entry[2]
            del self._storages[key]


def _tensors(tree: Any) -> Iterable[torch.Tensor]:
    return (leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor))


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """Bytes of one decoder program (one prompt bucket, tokens per prompt, multimask, hints and
    image size)."""

    graph_pool: int  # the most its decode and post-processing captures hold at once
    graph_outputs: int  # of which stays held after them (outputs read by a later graph)
    device_buffers: int  # static device buffers allocated when it was built
    host_buffers: int  # static host buffers allocated then (pinned on a GPU)


def meta_pipeline() -> DevicePipeline:
    """A DevicePipeline with MobileSAM's decoders on the meta device (no weights, no data)."""
    with torch.device("meta"):
        decoders = {
            multimask: PromptDecoder(build_prompt_encoder(), build_mask_decoder(), multimask)
            for multimask in (False, True)
        }
    return DevicePipeline(nn.Identity(), "meta", decoders=decoders)


def decoder_program_memory(
    pipeline: DevicePipeline,
    image_size: tuple[int, int],
    prompts: int,
    multimask: bool,
    tokens: int = 2,
    hints: bool = False,
) -> ProgramMemory:
    """Build the decoder program for `prompts` prompts of `tokens` points each on an image of
    `image_size` (H, W) in `pipeline` (from `meta_pipeline`; on a CPU one, with data, the host
    buffers count as device ones), run it once and account both. Buffers shared with programs
    built before (the transfer buffer) count only where they are allocated."""
    geometry = FrameGeometry.for_image(*image_size)
    key = (prompt_bucket(prompts), tokens, multimask, hints, geometry)
    with torch.inference_mode():
        with AllocationTracker() as built:
            program = pipeline._decoder_program(key)
        with AllocationTracker() as ran:
            program.run()
            program.postprocess_program()
        device = pipeline.device.type
        return ProgramMemory(
            graph_pool=ran.peak[device],
            graph_outputs=ran.live[device],
            device_buffers=built.live[device],
            host_buffers=built.live[_HOST] if device != _HOST else 0,
        )


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--prompts", type=int, default=64)
    args = parser.parse_args(argv)
    size = (args.height, args.width)
    print(f"{args.width}x{args.height}, {args.prompts} prompts of 2 points, one program each:")
    for multimask, hints in ((True, False), (False, False), (True, True)):
        usage = decoder_program_memory(meta_pipeline(), size, args.prompts, multimask, hints=hints)
        fields = ", ".join(
            f"{field.name} {_megabytes(getattr(usage, field.name))}"
            for field in dataclasses.fields(usage)
        )
        print(f"  multimask={multimask}, hints={hints}: {fields}")
    # As many programs as a pipeline holds, all for this many prompts: 1-4 points per prompt,
    # multimask or not, with and without mask hints.
    pipeline = meta_pipeline()
    keys = itertools.product((True, False), (False, True), (1, 2, 3, 4))
    programs = [
        decoder_program_memory(pipeline, size, args.prompts, multimask, tokens, hints)
        for multimask, hints, tokens in itertools.islice(keys, MAX_DECODER_GRAPHS)
    ]
    # Captured one after the other, they reuse the pool but for the outputs each one holds.
    pool = max(p.graph_pool - p.graph_outputs for p in programs)
    pool += sum(p.graph_outputs for p in programs)
    print(
        f"  {len(programs)} programs together: graph pool {_megabytes(pool)}, "
        f"device buffers {_megabytes(sum(p.device_buffers for p in programs))}, "
        f"host buffers {_megabytes(sum(p.host_buffers for p in programs))}"
    )


if __name__ == "__main__":
    main()
