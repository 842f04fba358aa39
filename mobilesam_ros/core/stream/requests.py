"""On-demand requests: prompts answered on one image and replied to their caller alone.

A request names its image (pixels it brings) or a frame a stream has cached (by stamp, 0 for
the newest one, whose embedding is then reused). The pipeline's worker answers it between
stream frames, without touching any stream's tracks; the reply, or the error that explains why
there is none, arrives through the request's future.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from mobilesam_ros.core.processing.image_codec import DecodedImage
from mobilesam_ros.core.prompts import Prompt, PromptMask


@dataclass(frozen=True)
class SegmentRequest:
    prompts: Sequence[Prompt]
    image: DecodedImage | None = None  # the pixels to segment; None: a frame of `stream`
    stream: str = ""
    stamp_ns: int = 0  # without an image: the cached frame with this stamp (0: the newest)
    everything: bool = False  # also every mask of the image (segment everything), ids e0, ...


@dataclass(frozen=True)
class SegmentReply:
    instances: list[PromptMask]  # one per prompt, in the request's order
    image: DecodedImage
    stamp_ns: int  # the stamp of the frame answered (the request's own with an image)
    frame_id: str = ""  # the cached frame's ("" for a request's own image)


@dataclass
class PendingRequest:
    request: SegmentRequest
    reply: Future[SegmentReply] = field(default_factory=Future)
