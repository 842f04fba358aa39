"""Tracking: instances followed from frame to frame between detections, with stable ids.

Detectors run at a few hertz, cameras at 30. Every decoded instance becomes a `Track` with an
id that is never reused ("t1", "t2", ...). On each frame the `Tracker` plans one prompt per
instance: a fresh detection that matches a track refreshes it, an unmatched fresh prompt starts
a track, and every other live track is re-segmented from its propagated box (its last mask's box
moved by the sparse optical flow of feature points inside that mask, plus a margin), with its
last low-res logits, moved the same way, as a mask hint. All of them are decoded together, so a
frame costs one encoder run and one decoder call per prompt structure (`decode_track_prompts`;
prompts without a hint get a zero flag in the same call). A track whose points cannot be
followed (they left the image, blur, no texture) coasts on its last measured velocity.

Association rule: box IoU between each fresh prompt's box and each track's propagated box;
pairs at or above `iou_match_threshold` are taken greedily by descending IoU (ties: older track
first, then earlier prompt), each track and each prompt at most once. A prompt without a box
(a click) whose foreground points all lie in the propagated box of a live click-started track
re-prompts that track (the smallest such box), so clicking an object twice does not stack two
tracks on it; any other click starts a track.

A detector-started track ends when no detection has confirmed it for more than `max_age`
seconds; a track started by a prompt or a click (nobody will re-detect it) only after
`prompt_max_age` (0: never). Any track ends when its predicted IoU stays below `min_iou` for
`min_iou_frames` propagated frames in a row, when less than `min_visible` of its propagated box
lies inside the image, or when its mask comes back empty. Outputs: the fresh prompts' instances
in prompt order, then the propagated tracks in creation order (id order).

ROS-free and single-threaded; `now` is seconds on any clock that does not run backwards (the
image stamp suits recorded data). The decode step is injected, so the logic is testable with
arrays and a deterministic stand-in for the decoder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.processing.preprocess import CHANNEL_ORDERS, FrameGeometry
from mobilesam_ros.core.prompts import PROMPTED, PROPAGATED, Prompt, PromptMask, decode_prompts
from mobilesam_ros.core.segmenter import ImageEmbedding, Segmenter
from mobilesam_ros.core.settings import TrackingSettings

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels, inclusive

# Pyramidal Lucas-Kanade settings: a 21 px window on levels 0 to 3 follows motions of a few
# tens of pixels per frame at 640x480.
FLOW_WINDOW = (21, 21)
FLOW_LEVELS = 3
FLOW_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
# A point is kept when tracking it back lands within this many pixels of where it started.
FORWARD_BACKWARD_MAX_PX = 1.0
RANSAC_THRESHOLD_PX = 1.0
MIN_FLOW_POINTS = 4  # fewer inliers than this: the motion estimate is not reliable
MAX_SCALE_STEP = 1.25  # a larger zoom between two frames is taken as a failed estimate

# Where a track came from in this frame's plan.
ORIGIN_DETECTION = "detection"  # a fresh prompt matched to the track: it refreshes it
ORIGIN_NEW = "new"  # a fresh prompt that matched no track: it starts one
ORIGIN_PROPAGATED = "propagated"  # no fresh prompt: the track's own propagated box

# Why tracks ended (diagnostics counter names).
ENDED_MAX_AGE = "tracks_unconfirmed_for_max_age"
ENDED_LOW_IOU = "tracks_with_low_predicted_iou"
ENDED_LEFT_IMAGE = "tracks_that_left_the_image"
ENDED_EMPTY_MASK = "tracks_with_empty_mask"
ENDED_IMAGE_SIZE = "tracks_ended_by_image_size_change"
ENDED_CLOCK_JUMP = "tracks_ended_by_clock_jump"
UNRELIABLE_FLOW = "propagations_without_reliable_flow"


@dataclass(frozen=True)
class FlowFrame:
    """The grayscale image that optical flow needs, converted once per camera frame.

    OpenCV builds the LK pyramids inside each flow call: its Python binding cannot take the
    pyramids of `buildOpticalFlowPyramid` (OpenCV issue 4777). The tracker therefore tracks the
    points of all tracks in one forward and one backward call per frame.
    """

    gray: np.ndarray  # (H, W) uint8

    @classmethod
    def from_image(cls, image: np.ndarray, channel_order: str = "rgb") -> FlowFrame:
        """From an (H, W) uint8 grayscale image or an (H, W, C) one in `channel_order`."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise InvalidInputError("image for tracking must be a uint8 numpy array")
        if image.ndim == 2:
            gray = image
        else:
            if channel_order not in CHANNEL_ORDERS:
                raise InvalidInputError(
                    f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, "
                    f"got {channel_order!r}"
                )
            if image.ndim != 3 or image.shape[2] != len(channel_order):
                raise InvalidInputError(
                    f"image must have shape (H, W) or (H, W, {len(channel_order)}) in "
                    f"{channel_order} order, got {image.shape}"
                )
            codes = {
                "rgb": cv2.COLOR_RGB2GRAY,
                "bgr": cv2.COLOR_BGR2GRAY,
                "rgba": cv2.COLOR_RGBA2GRAY,
                "bgra": cv2.COLOR_BGRA2GRAY,
            }
            gray = cv2.cvtColor(image, codes[channel_order])
        if gray.shape[0] == 0 or gray.shape[1] == 0:
            raise InvalidInputError(f"image is empty: shape {image.shape}")
        return cls(np.ascontiguousarray(gray))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.gray.shape[0], self.gray.shape[1]


@dataclass(frozen=True)
class BoxMotion:
    """A zoom and shift without rotation, p' = scale * p + shift, estimated from point flow."""

    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    points: int = 0  # points that agreed with the estimate
    reliable: bool = False  # False: too few points; the box is kept where it was

    def apply(self, box: Box) -> Box:
        dx, dy = self.shift
        x0, y0, x1, y1 = box
        s = self.scale
        return (s * x0 + dx, s * y0 + dy, s * x1 + dx, s * y1 + dy)


def _feature_points(
    gray: np.ndarray, mask: np.ndarray | MaskCrop, box: Box, max_points: int
) -> np.ndarray:
    """Up to `max_points` (x, y) points to track inside `mask`: corners, else a grid of pixels."""
    height, width = gray.shape
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width - 1), min(int(np.ceil(box[3])), height - 1)
    if x1 < x0 or y1 < y0:
        return np.empty((0, 2), np.float32)
    region = _mask_window(mask, x0, y0, x1, y1)
    # Points on the outline see the background too: keep away from it where the mask allows.
    eroded = cv2.erode(region, np.ones((5, 5), np.uint8))
    if np.count_nonzero(eroded) >= 4 * MIN_FLOW_POINTS:
        region = eroded
    points = np.empty((0, 2), np.float32)
    if min(region.shape) >= 7:
        side = min(region.shape)
        corners = cv2.goodFeaturesToTrack(
            gray[y0 : y1 + 1, x0 : x1 + 1],
            maxCorners=max_points,
            qualityLevel=0.01,
            minDistance=max(3.0, side / 20.0),
            mask=region,
            blockSize=5,
        )
        if corners is not None:
            points = corners.reshape(-1, 2)
    if len(points) < 2 * MIN_FLOW_POINTS:  # little texture: a grid over the mask instead
        ys, xs = np.nonzero(region)
        if len(xs):
            picks = np.linspace(0, len(xs) - 1, min(len(xs), max_points)).astype(int)
            grid = np.stack([xs[picks], ys[picks]], axis=1).astype(np.float32)
            points = np.concatenate([points, grid])
    return (points + np.array([x0, y0], np.float32)).astype(np.float32)


def _mask_window(mask: np.ndarray | MaskCrop, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """uint8 0/1 window [y0..y1] x [x0..x1] of a full-frame mask or of a crop placed in one."""
    if not isinstance(mask, MaskCrop):
        return mask[y0 : y1 + 1, x0 : x1 + 1].astype(np.uint8)
    window = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    height, width = mask.mask.shape
    top, left = max(y0, mask.y0), max(x0, mask.x0)
    bottom, right = min(y1, mask.y0 + height - 1), min(x1, mask.x0 + width - 1)
    if top <= bottom and left <= right:
        window[top - y0 : bottom - y0 + 1, left - x0 : right - x0 + 1] = mask.mask[
            top - mask.y0 : bottom - mask.y0 + 1, left - mask.x0 : right - mask.x0 + 1
        ]
    return window


def _fit_motion(start: np.ndarray, end: np.ndarray) -> BoxMotion:
    """Zoom and shift that carry `start` points to `end` points, robust to outliers."""
    if len(start) >= MIN_FLOW_POINTS:
        matrix, inliers = cv2.estimateAffinePartial2D(
            start, end, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD_PX
        )
        if matrix is not None and inliers is not None:
            keep = inliers.ravel().astype(bool)
            scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
            if keep.sum() >= MIN_FLOW_POINTS and 1 / MAX_SCALE_STEP <= scale <= MAX_SCALE_STEP:
                # The fit may include a small rotation; the box keeps its axes, so the shift is
                # refitted for the zoom alone.
                shift = np.median(end[keep] - scale * start[keep], axis=0)
                return BoxMotion(scale, (float(shift[0]), float(shift[1])), int(keep.sum()), True)
    if len(start):
        shift = np.median(end - start, axis=0)
        return BoxMotion(1.0, (float(shift[0]), float(shift[1])), len(start), False)
    return BoxMotion()


def estimate_motions(
    previous: FlowFrame,
    current: FlowFrame,
    masks: Sequence[np.ndarray | MaskCrop],
    boxes: Sequence[Box],
    max_points: int = 50,
) -> list[BoxMotion]:
    """How each mask's object moved from `previous` to `current`, one `BoxMotion` per mask.

    Corners inside each mask (eroded a little) are tracked with pyramidal Lucas-Kanade, all
    masks' points in one forward and one backward call; points that do not come back to where
    they started, or leave the image, are dropped; a zoom-and-shift fit with RANSAC follows.
    """
    if previous.size != current.size:
        raise InvalidInputError(
            f"frames for optical flow differ in size: {previous.size} and {current.size}"
        )
    per_track = [
        _feature_points(previous.gray, mask, box, max_points)
        for mask, box in zip(masks, boxes, strict=True)
    ]
    counts = [len(p) for p in per_track]
    if sum(counts) == 0:
        return [BoxMotion() for _ in per_track]
    start = np.concatenate(per_track).reshape(-1, 1, 2)
    lk = {"winSize": FLOW_WINDOW, "maxLevel": FLOW_LEVELS, "criteria": FLOW_CRITERIA}
    end, found, _ = cv2.calcOpticalFlowPyrLK(previous.gray, current.gray, start, None, **lk)
    back, found_back, _ = cv2.calcOpticalFlowPyrLK(current.gray, previous.gray, end, None, **lk)
    start, end, back = start.reshape(-1, 2), end.reshape(-1, 2), back.reshape(-1, 2)
    good = (
        found.ravel().astype(bool)
        & found_back.ravel().astype(bool)
        & (np.linalg.norm(back - start, axis=1) <= FORWARD_BACKWARD_MAX_PX)
    )
    motions = []
    offset = 0
    for count in counts:
        chunk = slice(offset, offset + count)
        keep = good[chunk]
        motions.append(_fit_motion(start[chunk][keep], end[chunk][keep]))
        offset += count
    return motions


def prompt_box(box: Box, margin: float, min_margin_px: float, size: tuple[int, int]) -> Box:
    """`box` grown by `margin` of its width/height (at least `min_margin_px`), clipped to size."""
    x0, y0, x1, y1 = box
    height, width = size
    grow_x = max(margin * (x1 - x0 + 1), min_margin_px)
    grow_y = max(margin * (y1 - y0 + 1), min_margin_px)
    return (
        float(max(x0 - grow_x, 0.0)),
        float(max(y0 - grow_y, 0.0)),
        float(min(x1 + grow_x, width - 1.0)),
        float(min(y1 + grow_y, height - 1.0)),
    )


def visible_fraction(box: Box, size: tuple[int, int]) -> float:
    """Share of `box`'s area that lies inside an image of `size` (H, W)."""
    x0, y0, x1, y1 = box
    height, width = size
    area = max(x1 - x0 + 1, 0.0) * max(y1 - y0 + 1, 0.0)
    if area <= 0:
        return 0.0
    inside_w = max(min(x1, width - 1.0) - max(x0, 0.0) + 1, 0.0)
    inside_h = max(min(y1, height - 1.0) - max(y0, 0.0) + 1, 0.0)
    return float(inside_w * inside_h / area)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two inclusive pixel boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return float(inter / (area_a + area_b - inter))


def move_logits(logits: np.ndarray, motion: BoxMotion, size: tuple[int, int]) -> np.ndarray:
    """Low-res (256, 256) logits of a frame of `size` (H, W) moved by `motion`, as a mask hint."""
    kx, ky = FrameGeometry.for_image(*size).scale_xy / (1024 / LOW_RES_SIZE)
    s = motion.scale
    # Image pixel p maps to low-res pixel u = k (p + 1/2) - 1/2; p' = s p + shift becomes
    # u' = s u + k shift + (s - 1)(1 - k) / 2.
    matrix = np.array(
        [
            [s, 0.0, kx * motion.shift[0] + (s - 1) * (1 - kx) / 2],
            [0.0, s, ky * motion.shift[1] + (s - 1) * (1 - ky) / 2],
        ]
    )
    logits = np.asarray(logits, dtype=np.float32)
    return cv2.warpAffine(
        logits,
        matrix,
        (LOW_RES_SIZE, LOW_RES_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(logits.min()),
    )


@dataclass
class Track:
    """One followed instance. `box` and `mask` are those of its last decoded frame."""

    track_id: str
    class_id: str
    detection_score: float
    detection_id: str  # id of the fresh prompt that last confirmed it
    box: Box  # tight box of `crop`
    crop: MaskCrop = field(repr=False)  # the last mask, as its tight crop
    low_res_logits: np.ndarray = field(repr=False)  # (256, 256) float32
    predicted_iou: float
    born: float  # seconds
    last_confirmed: float  # seconds: when a fresh prompt last matched it
    low_iou_streak: int = 0  # propagated frames in a row with predicted IoU below min_iou
    velocity: tuple[float, float] = (0.0, 0.0)  # box center, pixels per second, from the flow
    source: object = field(default=None, repr=False)  # the last confirming prompt's source
    from_detector: bool = False  # started by a detection (ends unless re-detected)
    click: bool = False  # started by a points-only prompt (a click)

    def last_prompt(self, box: Box) -> Prompt:
        """The confirming prompt's identity (id, class, score, source) on a propagated box."""
        return Prompt(
            id=self.detection_id,
            box=box,
            class_id=self.class_id,
            detection_score=self.detection_score,
            source=self.source,
            from_detector=self.from_detector,
        )

    def coasting_motion(self, elapsed: float, points: int = 0) -> BoxMotion:
        """The motion to assume when the flow fails (points left the image, blur, no texture):
        the last measured velocity, kept for `elapsed` seconds."""
        shift = (self.velocity[0] * elapsed, self.velocity[1] * elapsed)
        return BoxMotion(1.0, shift, points, reliable=False)


@dataclass(frozen=True)
class TrackPrompt:
    """One prompt to decode this frame for the track `track_id`.

    `prompt` is the fresh prompt itself (detection and new origins) or, for a propagated
    track, its propagated box with the identity of the prompt that last confirmed it.
    """

    prompt: Prompt
    origin: str  # ORIGIN_DETECTION, ORIGIN_NEW or ORIGIN_PROPAGATED
    track_id: str = ""
    mask_input: np.ndarray | None = field(default=None, repr=False)  # (256, 256) logits hint
    fresh_index: int | None = None  # position among the frame's fresh prompts
    predicted_box: Box | None = None  # the track's propagated tight box, for existing tracks
    motion: BoxMotion | None = None  # for existing tracks

    @property
    def detection_id(self) -> str:
        """The fresh prompt's own id (detection and new origins)."""
        return "" if self.origin == ORIGIN_PROPAGATED else self.prompt.id


@dataclass(frozen=True)
class FramePlan:
    """What one frame decodes (`prompts`, in output order) and which tracks end undecoded."""

    frame: FlowFrame
    now: float
    prompts: tuple[TrackPrompt, ...]
    ended: dict[str, str]  # track id -> reason (an ENDED_* name)
    generation: int


DecodeFn = Callable[[Sequence[TrackPrompt]], Sequence[PromptMask]]


class Tracker:
    """Tracks with stable ids across frames; see the module docstring for the rules and
    `TrackingSettings` for what each setting does."""

    def __init__(self, settings: TrackingSettings | None = None) -> None:
        self.settings = settings or TrackingSettings()
        self._tracks: list[Track] = []
        self._frame: FlowFrame | None = None
        self._now: float | None = None
        self._next_id = 1
        self._generation = 0
        self.counts: Counter[str] = Counter()  # why tracks ended; propagations without flow

    def configure(self, settings: TrackingSettings) -> None:
        """New settings from the next frame on (live tracks keep going)."""
        self.settings = settings

    @property
    def tracks(self) -> list[Track]:
        """Live tracks in creation order."""
        return list(self._tracks)

    @property
    def active(self) -> bool:
        """Whether any track lives: then every frame needs encoding, not just prompted ones."""
        return bool(self._tracks)

    def expire(self, now: float) -> None:
        """End the tracks unconfirmed for more than `max_age` at `now`, for frames that are
        not tracked (nobody listens): tracks age by time even when no frame is decoded."""
        live = [t for t in self._tracks if not self._too_old(t, now)]
        if len(live) != len(self._tracks):
            self.counts[ENDED_MAX_AGE] += len(self._tracks) - len(live)
            self._tracks = live
            self._generation += 1

    def plan(self, frame: FlowFrame, now: float, fresh: Sequence[Prompt] = ()) -> FramePlan:
        """The prompts to decode on `frame`: matched, propagated, then new; ends the rest.

        Changes no track: `update` applies the plan once its prompts are decoded.
        """
        if not isinstance(frame, FlowFrame):
            raise InvalidInputError("frame must be a FlowFrame")
        tracks = self._tracks
        ended: dict[str, str] = {}
        previous = self._frame
        reason = None
        if tracks and previous is not None and previous.size != frame.size:
            reason = ENDED_IMAGE_SIZE
        elif tracks and self._now is not None and now < self._now:
            reason = ENDED_CLOCK_JUMP
        if reason is not None:
            ended = {track.track_id: reason for track in tracks}
            tracks = []
        motions = (
            estimate_motions(
                previous,
                frame,
                [t.crop for t in tracks],
                [t.box for t in tracks],
                self.settings.max_points,
            )
            if tracks and previous is not None
            else [BoxMotion() for _ in tracks]
        )
        elapsed = now - self._now if self._now is not None else 0.0
        motions = [
            m if m.reliable else t.coasting_motion(elapsed, m.points)
            for m, t in zip(motions, tracks, strict=True)
        ]
        predicted = [m.apply(t.box) for m, t in zip(motions, tracks, strict=True)]
        matches = self._associate(predicted, fresh)
        matches.update(self._associate_clicks(tracks, predicted, fresh, set(matches.values())))
        prompts: list[TrackPrompt] = []
        for index, track in enumerate(tracks):
            detection = matches.get(index)
            if detection is not None:
                prompts.append(
                    TrackPrompt(
                        fresh[detection],
                        ORIGIN_DETECTION,
                        track.track_id,
                        fresh_index=detection,
                        predicted_box=predicted[index],
                        motion=motions[index],
                    )
                )
            elif self._too_old(track, now):
                ended[track.track_id] = ENDED_MAX_AGE
            elif not self._visible(predicted[index], frame.size):
                ended[track.track_id] = ENDED_LEFT_IMAGE
            else:
                hint = None
                if self.settings.mask_prompt:
                    hint = move_logits(track.low_res_logits, motions[index], frame.size)
                box = prompt_box(
                    predicted[index], self.settings.margin, self.settings.min_margin_px, frame.size
                )
                prompts.append(
                    TrackPrompt(
                        track.last_prompt(box),
                        ORIGIN_PROPAGATED,
                        track.track_id,
                        mask_input=hint,
                        predicted_box=predicted[index],
                        motion=motions[index],
                    )
                )
        matched = set(matches.values())
        for index, fresh_prompt in enumerate(fresh):
            if index not in matched:
                track_id = f"t{self._next_id}"
                self._next_id += 1  # ids are never reused, even when a plan is dropped
                prompts.append(TrackPrompt(fresh_prompt, ORIGIN_NEW, track_id, fresh_index=index))
        return FramePlan(frame, float(now), tuple(prompts), ended, self._generation)

    def update(self, plan: FramePlan, results: Sequence[PromptMask]) -> list[PromptMask]:
        """Apply `plan` with the decoded `results` (one per plan prompt, in order).

        Returns one PromptMask per live track: first those of the fresh prompts, in their
        order, then the propagated tracks in creation order. Each carries its track id, its
        origin and the identity (id, class, score, source) of its last confirming prompt.
        """
        if plan.generation != self._generation:
            raise InvalidInputError("this plan is stale: another plan was applied since")
        if len(results) != len(plan.prompts):
            raise InvalidInputError(
                f"got {len(results)} decoded masks for {len(plan.prompts)} planned prompts"
            )
        for reason in plan.ended.values():
            self.counts[reason] += 1
        existing = {t.track_id: t for t in self._tracks if t.track_id not in plan.ended}
        live: list[Track] = []
        outputs: list[PromptMask] = []
        for planned, result in zip(plan.prompts, results, strict=True):
            prompt = planned.prompt
            if planned.origin == ORIGIN_PROPAGATED and not planned.motion.reliable:
                self.counts[UNRELIABLE_FLOW] += 1
            box = result.crop.box
            if box is None:
                self.counts[ENDED_EMPTY_MASK] += 1
                continue
            logits = np.asarray(result.low_res_logits, dtype=np.float32)
            if planned.origin == ORIGIN_NEW:
                track = Track(
                    planned.track_id,
                    prompt.class_id,
                    float(prompt.detection_score),
                    prompt.id,
                    box,
                    result.crop,
                    logits,
                    float(result.predicted_iou),
                    born=plan.now,
                    last_confirmed=plan.now,
                    source=prompt.source,
                    from_detector=prompt.from_detector,
                    click=prompt.box is None,
                )
            else:
                track = existing[planned.track_id]
                if planned.origin == ORIGIN_DETECTION:
                    track.class_id = prompt.class_id
                    track.detection_score = float(prompt.detection_score)
                    track.detection_id = planned.detection_id
                    track.source = prompt.source
                    track.last_confirmed = plan.now
                    track.low_iou_streak = 0
                elif self.settings.min_iou > 0 and result.predicted_iou < self.settings.min_iou:
                    track.low_iou_streak += 1
                    if track.low_iou_streak >= self.settings.min_iou_frames:
                        self.counts[ENDED_LOW_IOU] += 1
                        continue
                else:
                    track.low_iou_streak = 0
                motion = planned.motion
                elapsed = plan.now - self._now if self._now is not None else 0.0
                if motion is not None and motion.reliable and elapsed > 0:
                    before, after = track.box, motion.apply(track.box)
                    track.velocity = (
                        (after[0] + after[2] - before[0] - before[2]) / 2 / elapsed,
                        (after[1] + after[3] - before[1] - before[3]) / 2 / elapsed,
                    )
                track.box, track.crop, track.low_res_logits = box, result.crop, logits
                track.predicted_iou = float(result.predicted_iou)
            live.append(track)
            origin = PROPAGATED if planned.origin == ORIGIN_PROPAGATED else PROMPTED
            order = (0, planned.fresh_index) if origin == PROMPTED else (1, len(live))
            output = PromptMask(
                prompt, result.crop, float(result.predicted_iou), logits, track.track_id, origin
            )
            outputs.append((order, output))
        self._tracks = live
        self._frame = plan.frame
        self._now = plan.now
        self._generation += 1
        return [output for _, output in sorted(outputs, key=lambda item: item[0])]

    def step(
        self, frame: FlowFrame, now: float, fresh: Sequence[Prompt], decode: DecodeFn
    ) -> list[PromptMask]:
        """`plan`, `decode` the planned prompts (skipped when there are none), `update`."""
        plan = self.plan(frame, now, fresh)
        results = decode(plan.prompts) if plan.prompts else []
        return self.update(plan, results)

    def _too_old(self, track: Track, now: float) -> bool:
        limit = self.settings.max_age if track.from_detector else self.settings.prompt_max_age
        return limit > 0 and now - track.last_confirmed > limit

    def _associate_clicks(
        self,
        tracks: Sequence[Track],
        predicted: Sequence[Box],
        fresh: Sequence[Prompt],
        taken: set[int],
    ) -> dict[int, int]:
        """Track index -> click index: a click (points only) whose foreground points all lie in
        the propagated box of a live click-started track re-prompts that track instead of
        starting a second one on the same object (the smallest such box wins)."""
        matches: dict[int, int] = {}
        for prompt_index, prompt in enumerate(fresh):
            if prompt.box is not None or prompt_index in taken:
                continue
            inside = [
                (area(predicted[i]), i)
                for i, track in enumerate(tracks)
                if track.click and i not in matches and _holds_points(predicted[i], prompt)
            ]
            if inside:
                matches[min(inside)[1]] = prompt_index
        return matches

    def _visible(self, box: Box, size: tuple[int, int]) -> bool:
        fraction = visible_fraction(box, size)
        return fraction > 0 and fraction >= self.settings.min_visible

    def _associate(self, predicted: Sequence[Box], fresh: Sequence[Prompt]) -> dict[int, int]:
        """Track index -> fresh prompt index, greedily by descending box IoU."""
        pairs = []
        for track_index, track_box in enumerate(predicted):
            for prompt_index, prompt in enumerate(fresh):
                if prompt.box is None:
                    continue
                iou = box_iou(track_box, prompt.box)
                if iou >= self.settings.iou_match:
                    pairs.append((-iou, track_index, prompt_index))
        pairs.sort()
        matches: dict[int, int] = {}
        taken: set[int] = set()
        for _, track_index, prompt_index in pairs:
            if track_index not in matches and prompt_index not in taken:
                matches[track_index] = prompt_index
                taken.add(prompt_index)
        return matches


def area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _holds_points(box: Box, prompt: Prompt) -> bool:
    points = [p for p, label in zip(prompt.points, prompt.point_labels, strict=True) if label == 1]
    return bool(points) and all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in points)


def decode_track_prompts(
    segmenter: Segmenter, embedding: ImageEmbedding, prompts: Sequence[TrackPrompt]
) -> list[PromptMask]:
    """Masks for a plan's prompts in their order: one decoder call per prompt structure, with
    each propagated track's mask hint and no hint for fresh prompts, in the same call."""
    return decode_prompts(
        segmenter,
        embedding,
        [planned.prompt for planned in prompts],
        [planned.mask_input for planned in prompts],
    )
