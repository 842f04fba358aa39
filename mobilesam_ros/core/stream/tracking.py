"""Tracking: instances followed from frame to frame between detections, with stable ids.

Detectors run at a few hertz, cameras at 30. Every decoded instance becomes a `Track` with an
id that is never reused ("t1", "t2", ...). On each frame the `Tracker` plans one prompt per
instance: a fresh detection that matches a track refreshes it, an unmatched fresh prompt starts
a track, and every other live track is re-segmented from its propagated box (its last mask's box
moved by the sparse optical flow of feature points inside that mask, plus a margin; `flow`),
with its last low-res logits, moved the same way, as a mask hint. All of them are decoded
together, so a frame costs one encoder run and one decoder call per prompt structure
(`decode_track_prompts`; prompts without a hint get a zero flag in the same call). A track whose
points cannot be followed (they left the image, blur, no texture) coasts on its last measured
velocity.

Association rules (`association.py`), in this order, each track and prompt at most once:
1. By id: a prompt (not a detection) whose id is that of a live prompt-started track refreshes
   it, whatever the boxes: prompt ids are the sender's identity of its objects. Detections do
   the same with `match_detection_ids` (detectors with stable ids); made-up ids never match.
2. By box IoU between each fresh prompt's box and each track's propagated box: pairs at or
   above `iou_match` are taken greedily by descending IoU (ties: older track first, then
   earlier prompt). Many detectors number their boxes anew on each frame, so this is their rule.
3. A prompt without a box (a click) whose foreground points all lie in the propagated box of a
   live click-started track re-prompts that track (the smallest such box), so clicking an object
   twice does not stack two tracks on it; any other click starts a track.
At most `max_tracks` tracks live: the oldest propagated tracks end first.

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

import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.prompts import PROMPTED, PROPAGATED, Prompt, PromptMask, decode_prompts
from mobilesam_ros.core.segmenter import ImageEmbedding, Segmenter
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream.association import associate
from mobilesam_ros.core.stream.boxes import (
    Box,
    prompt_box,
    visible_fraction,
)
from mobilesam_ros.core.stream.flow import BoxMotion, FlowFrame, estimate_motions, move_logits

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
ENDED_OVER_MAX_TRACKS = "tracks_ended_over_max_tracks"
UNRELIABLE_FLOW = "propagations_without_reliable_flow"


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

    def __init__(self, settings: TrackingSettings | None = None, id_prefix: str = "") -> None:
        """id_prefix: put before every track id (a camera's "front/"), so that the tracks of
        several cameras never share an id."""
        self.settings = settings or TrackingSettings()
        self._id_prefix = id_prefix
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
        matches = associate(tracks, predicted, fresh, self.settings)
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
                track_id = f"{self._id_prefix}t{self._next_id}"
                self._next_id += 1  # ids are never reused, even when a plan is dropped
                prompts.append(TrackPrompt(fresh_prompt, ORIGIN_NEW, track_id, fresh_index=index))
        self._bound_tracks(prompts, ended)
        return FramePlan(frame, float(now), tuple(prompts), ended, self._generation)

    def _bound_tracks(self, prompts: list[TrackPrompt], ended: dict[str, str]) -> None:
        """At most max_tracks planned: the oldest propagated tracks end first (the fresh
        prompts of this frame are answered whatever their number)."""
        excess = len(prompts) - self.settings.max_tracks
        for planned in [p for p in prompts if p.origin == ORIGIN_PROPAGATED][: max(excess, 0)]:
            prompts.remove(planned)
            ended[planned.track_id] = ENDED_OVER_MAX_TRACKS

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
        prompted: list[tuple[int, PromptMask]] = []  # (position among the fresh prompts, mask)
        propagated: list[PromptMask] = []  # in track creation order
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
            output = PromptMask(
                prompt, result.crop, float(result.predicted_iou), logits, track.track_id, origin
            )
            if planned.fresh_index is None:  # only propagated tracks have no fresh prompt
                propagated.append(output)
            else:
                prompted.append((planned.fresh_index, output))
        if len(live) > self.settings.max_tracks:  # more fresh prompts than max_tracks
            self.counts[ENDED_OVER_MAX_TRACKS] += len(live) - self.settings.max_tracks
            live = live[len(live) - self.settings.max_tracks :]  # the newest stay
        self._tracks = live
        self._frame = plan.frame
        self._now = plan.now
        self._generation += 1
        prompted.sort(key=lambda item: item[0])
        return [output for _, output in prompted] + propagated

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

    def _visible(self, box: Box, size: tuple[int, int]) -> bool:
        fraction = visible_fraction(box, size)
        return fraction > 0 and fraction >= self.settings.min_visible


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
