"""The PyTorch fast path for a CUDA GPU: pre-processing, FP16 encoder and decoder, and mask
post-processing on the device, each replayed from a CUDA graph, with pinned-memory transfers.

Per frame: one host-to-device copy of the camera image and one of the prompts (from pinned
staging buffers), graph replays for pre-processing, encoder, decoder and post-processing, and one
device-to-host copy of what the caller needs (scores and masks, the low-res logits only when
asked), waited for with an event. The encoder graph is captured at construction; pre-processing
graphs when an image size first appears; decoder graphs per (prompt bucket, tokens per prompt,
multimask, mask hints) when first used, prompts padded to the bucket. All graphs share one memory
pool: they replay one after the other on one stream, and every output read later lives in a
buffer allocated outside the graphs. The decoder programs write into one transfer buffer (device
and pinned host) that they share, and upscale the masks a few at a time: the pool needs about
the largest program's working memory, not the sum of all. The same code runs eagerly on the CPU
(no graphs, no pinned memory), which is how the tests check it where no GPU is present.

- `pipeline`: `DevicePipeline` (encode, decode, stage times).
- `programs`: the CUDA-graph programs and their buffers; prompt buckets.
- `precision`: the FP16 encoder and decoder with their sensitive parts in FP32.
- `resize`: the antialiased pixel resize and the logits' upscaling on the device.
- `memory`: the decoder programs' memory, accounted on the CPU from their own buffers.
"""

from mobilesam_ros.core.backends.torch_device.pipeline import DevicePipeline

__all__ = ["DevicePipeline"]
