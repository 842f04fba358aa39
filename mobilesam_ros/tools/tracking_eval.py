"""`mobilesam-ros eval-tracking`: how well tracked masks agree with per-frame detector masks.

For every frame of a sequence with per-frame boxes (a detector's output, or the simulated camera's
known boxes), the reference is MobileSAM prompted with that frame's boxes. The tracker sees the
boxes only every `detector_every` frames and propagates in between. Reported: mask IoU between
each object's tracked mask and its reference mask (on frames without detections, and on all
frames), the share of object-frames with IoU >= 0.5, the share of frames where every object has
a tracked mask, and id switches (an object followed by a different track id than before).
Meaningful with the official weights; with random weights it only checks the plumbing.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mobilesam_ros.core import InvalidInputError, Segmenter
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream.flow import FlowFrame
from mobilesam_ros.core.stream.tracking import Tracker, decode_track_prompts

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackingReport:
    frames: int
    objects: int
    iou_between_detections: float  # mean over object-frames without a detection
    iou_all_frames: float
    share_iou_over_half: float
    share_frames_all_tracked: float
    id_switches: int  # an object's masks moving to another track_id
    share_prompt_ids_kept: float  # outputs whose id is still their object's prompt id

    def lines(self) -> list[str]:
        return [
            f"frames: {self.frames}, objects: {self.objects}",
            f"mean mask IoU, frames between detections: {self.iou_between_detections:.3f}",
            f"mean mask IoU, all frames:                {self.iou_all_frames:.3f}",
            f"object-frames with IoU >= 0.5:            {self.share_iou_over_half:.3f}",
            f"frames with a mask for every object:      {self.share_frames_all_tracked:.3f}",
            f"id switches (track_id):                   {self.id_switches}",
            f"outputs keeping their prompt's id:        {self.share_prompt_ids_kept:.3f}",
        ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def evaluate_tracking(
    segmenter: Segmenter,
    frames: Iterable[tuple[np.ndarray, dict[str, Box]]],
    detector_every: int = 10,
    fps: float = 30.0,
    tracker: Tracker | None = None,
) -> TrackingReport:
    """Run the tracker over (BGR image, {object id: box}) frames and score it (see above)."""
    if detector_every < 1:
        raise InvalidInputError(f"detector_every must be at least 1, got {detector_every}")
    tracker = tracker or Tracker(TrackingSettings(max_age=max(1.0, 2 * detector_every / fps)))
    between: list[float] = []
    every: list[float] = []
    frames_all_tracked = 0
    frame_count = 0
    objects: set[str] = set()
    followed_by: dict[str, str] = {}
    switches = 0
    outputs_total = outputs_with_prompt_id = 0
    for index, (bgr, boxes) in enumerate(frames):
        frame_count += 1
        names = list(boxes)
        objects.update(names)
        embedding = segmenter.encode(bgr, "bgr")
        reference = segmenter.decode(embedding, boxes=np.array([boxes[n] for n in names]))
        detected = index % detector_every == 0
        fresh = (
            [Prompt(id=name, box=tuple(boxes[name]), from_detector=True) for name in names]
            if detected
            else []
        )
        outputs = tracker.step(
            FlowFrame.from_image(bgr, "bgr"),
            index / fps,
            fresh,
            lambda planned, emb=embedding: decode_track_prompts(segmenter, emb, planned),
        )
        # Each output keeps its prompt's id (the object name here) beside its track id.
        by_prompt_id = {result.prompt.id: result for result in outputs}
        outputs_total += len(outputs)
        outputs_with_prompt_id += sum(result.prompt.id in objects for result in outputs)
        all_tracked = True
        for row, name in enumerate(names):
            result = by_prompt_id.get(name)
            if result is None:
                all_tracked = False
                iou = 0.0
            else:
                iou = _iou(result.mask, reference.masks[row])
                if name in followed_by and followed_by[name] != result.track_id:
                    switches += 1
                followed_by[name] = result.track_id
            every.append(iou)
            if not detected:
                between.append(iou)
        frames_all_tracked += all_tracked
    if frame_count == 0:
        raise InvalidInputError("the sequence has no frames")
    return TrackingReport(
        frames=frame_count,
        objects=len(objects),
        iou_between_detections=statistics.fmean(between) if between else float("nan"),
        iou_all_frames=statistics.fmean(every) if every else float("nan"),
        share_iou_over_half=float(np.mean(np.array(every) >= 0.5)) if every else float("nan"),
        share_frames_all_tracked=frames_all_tracked / frame_count,
        id_switches=switches,
        share_prompt_ids_kept=outputs_with_prompt_id / outputs_total if outputs_total else 1.0,
    )


def simulated_sequence(
    frames: int, objects: int = 5
) -> Iterator[tuple[np.ndarray, dict[str, Box]]]:
    """The simulated camera over the astronaut photo, with the first `objects` objects' boxes."""
    from mobilesam_ros.tools.camera_sim import astronaut_camera

    camera = astronaut_camera()
    for index in range(frames):
        frame = camera.frame(index)
        names = list(camera.objects)[:objects]
        yield frame.bgr, {n: frame.boxes[n] for n in names if n in frame.boxes}


def folder_sequence(images: Path, boxes_file: Path) -> Iterator[tuple[np.ndarray, dict[str, Box]]]:
    """Images of a folder in name order, with boxes from a JSON file:
    {"frame_0001.jpg": {"cup": [x0, y0, x1, y1], ...}, ...} (e.g. saved detector output)."""
    boxes = json.loads(Path(boxes_file).read_text())
    for name in sorted(boxes):
        bgr = cv2.imread(str(Path(images) / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InvalidInputError(f"cannot read image {Path(images) / name}")
        yield bgr, {str(k): tuple(float(v) for v in box) for k, box in boxes[name].items()}
