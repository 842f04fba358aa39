"""The node's stream pipeline driven by a recording: every image, in order, on the bag's clock.

Live, the node answers the newest image and skips those that arrive while it works. Here the
pipeline's clock is the recording's (log time of the messages read so far), and an image is
handed to the pipeline only when the one before it is done and the recording has reached the
image's arrival plus `sync.max_wait`: the prompts that the node would have waited for are in by
then (a burst beyond the frame cache is answered early), and no image is skipped however slow
the model is. Matching by stamp, tracking between detections, moving a slow detector's boxes
onto the frame, and every counter are the node's own.
Depth images and camera_info are matched to each answered frame as the node's 3D outputs do.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mobilesam_ros.core.depth import CameraModel, DepthImage
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import check_raw_image
from mobilesam_ros.core.segmenter import Segmenter
from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.core.stream.detections import SOURCE_DETECTIONS, SOURCE_YOLO
from mobilesam_ros.core.stream.failures import IMAGES_REJECTED
from mobilesam_ros.core.stream.frame_sync import Frame, PromptRequest
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.core.stream.requests import SegmentRequest
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.messages import readers
from mobilesam_ros.messages.depth_inputs import DepthMatcher

_INSTANT = 1e-6  # seconds
EVERYTHING_FAILED = "everything_failed"

# Input roles: how a message of each is read.
IMAGE, PROMPTS, DETECTIONS, DEPTH, CAMERA_INFO = (
    "image",
    "prompts",
    "detections",
    "depth",
    "camera_info",
)
_PROMPT_READERS: dict[str, tuple[Callable[[Any], list[Any]], str]] = {
    "mobilesam_ros/msg/PromptArray": (readers.prompts_from_prompt_array, "prompts"),
    "vision_msgs/msg/Detection2DArray": (readers.prompts_from_detections, SOURCE_DETECTIONS),
    "yolo_msgs/msg/DetectionArray": (readers.prompts_from_yolo_detections, SOURCE_YOLO),
}


class RecordingClock:
    """The pipeline's clock: seconds of the recording's log time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Answer:
    """One output frame: a stream result (or a segment-everything one) with its depth match."""

    result: FrameResult
    log_time_ns: int  # the image's: outputs are recorded when their image was
    depth: DepthImage | None = None
    camera: CameraModel | None = None


class OfflineStream:
    """Feeds one camera's recorded messages to a StreamPipeline (module docstring)."""

    def __init__(
        self,
        segmenter: Segmenter,
        settings: NodeSettings,
        everything: bool = False,
        name: str = "",
    ) -> None:
        """name: the stream's name, which prefixes its track ids ("<name>/t1")."""
        self.clock = RecordingClock()
        self._name = name
        self.pipeline = StreamPipeline(
            readers.decode_image_message,
            settings,
            streams=(name,),
            segmenter=segmenter,
            clock=self.clock,
        )
        self._settings = settings
        self._everything = everything
        self._waiting: deque[Frame] = deque()  # read, not handed to the pipeline yet
        self._depth = DepthMatcher(self.pipeline.failures)
        # Image stamp -> exact log time (ns), for the frames the pipeline may still answer.
        self._log_times: OrderedDict[int, int] = OrderedDict()
        self._log_times_kept = settings.sync.cache_size + 1
        self.frames_done = 0

    @property
    def frames_waiting(self) -> int:
        """Images read and not yet handed to the pipeline (bounded by the frame cache)."""
        return len(self._waiting)

    @property
    def next_frame_log_time_ns(self) -> int | None:
        """Log time of the first image read and not yet handed over, if any."""
        return self._log_times[self._waiting[0].stamp_ns] if self._waiting else None

    def add(self, role: str, log_time_ns: int, message: Any, message_type: str) -> None:
        """Take one recorded message; call `advance(its log time)` first."""
        now = log_time_ns / 1e9
        self.clock.now = max(self.clock.now, now)
        if role == IMAGE:
            self._add_image(message, log_time_ns)
        elif role in (PROMPTS, DETECTIONS):
            read, source = _PROMPT_READERS[message_type]
            header = message.header
            request = PromptRequest(
                readers.stamp_to_ns(header.stamp), header.frame_id, read(message), now, source
            )
            self.pipeline.add_request(request, self._name)
        elif role == DEPTH:
            self._depth.add_depth(message)
        elif role == CAMERA_INFO:
            self._depth.add_camera_info(message)

    def _add_image(self, message: Any, log_time_ns: int) -> None:
        if hasattr(message, "encoding"):  # raw: the node's cheap checks before the queue
            try:
                check_raw_image(
                    len(message.data), message.height, message.width, message.step, message.encoding
                )
            except InvalidInputError as exc:
                self._reject(IMAGES_REJECTED, exc)
                return
        header = message.header
        stamp_ns = readers.stamp_to_ns(header.stamp)
        self._waiting.append(Frame(stamp_ns, header.frame_id, message, log_time_ns / 1e9))
        self._log_times[stamp_ns] = log_time_ns
        self._log_times.move_to_end(stamp_ns)
        while len(self._log_times) > self._log_times_kept + len(self._waiting):
            self._log_times.popitem(last=False)

    def advance(self, now: float) -> Iterator[list[Answer]]:
        """Answer, in order, every waiting image whose wait for prompts is over at `now`
        (`math.inf`: every one); yields each image's answers (none when it had no prompts)."""
        wait = self._settings.sync.max_wait
        # A burst of images (more than the frame cache holds within one wait) is answered
        # early rather than held: memory stays bounded, no image is dropped.
        most = self._settings.sync.cache_size
        while self._waiting and (
            now >= self._waiting[0].received + wait or len(self._waiting) > most
        ):
            frame = self._waiting.popleft()
            # The instant before its wait ends (or now, for a burst): prompts logged with the
            # images still held here keep waiting for them instead of timing out.
            handed_over = min(frame.received + wait - _INSTANT, now)
            self.clock.now = max(self.clock.now, handed_over)
            self.pipeline.add_frame(frame, self._name)
            everything = None
            if self._everything:
                everything = self.pipeline.submit(
                    SegmentRequest((), stream=self._name, stamp_ns=frame.stamp_ns, everything=True)
                )
            answers = [self._answer(r) for r in self.pipeline.process_ready()]
            if everything is not None:
                answers.extend(self._everything_answer(frame, everything))
            self.frames_done += 1
            yield answers

    def expire(self) -> list[Answer]:
        """After the last image: let the prompts still waiting time out (counted as the node
        counts them); returns what tracking still answers."""
        self.clock.now += self._settings.sync.max_wait + 1.0
        return [self._answer(r) for r in self.pipeline.process_ready()]

    def _everything_answer(self, frame: Frame, future: Any) -> list[Answer]:
        try:
            reply = future.result(timeout=0)
        except Exception as exc:
            self._reject(EVERYTHING_FAILED, exc)
            return []
        result = FrameResult(
            frame, reply.instances, ("everything",), self._settings, everything=True
        )
        return [self._answer(result)]

    def _answer(self, result: FrameResult) -> Answer:
        """The result with the depth image matched to its stamp and the newest camera_info."""
        settings = result.settings
        stamp_ns = result.frame.stamp_ns
        depth, camera = self._depth.for_frame(
            stamp_ns, settings.sync.policy, settings.depth.max_offset
        )
        log_time_ns = self._log_times.get(stamp_ns, round(result.frame.received * 1e9))
        return Answer(result, log_time_ns, depth, camera)

    def _reject(self, reason: str, exc: Exception) -> None:
        self.pipeline.failures.report(reason, f"{reason}: {exc}")

    def counters(self) -> Counter[str]:
        """Everything dropped, rejected or failed, by reason (the pipeline's and this driver's)."""
        return self.pipeline.counters()
