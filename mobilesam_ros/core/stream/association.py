"""Which fresh prompt refreshes which live track (the rules in `tracking`'s docstring).

Pure functions of the tracks, their propagated boxes and the frame's fresh prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream.boxes import Box, area, box_iou, holds_points

if TYPE_CHECKING:
    from mobilesam_ros.core.stream.tracking import Track


def associate(
    tracks: Sequence[Track],
    predicted: Sequence[Box],
    fresh: Sequence[Prompt],
    settings: TrackingSettings,
) -> dict[int, int]:
    """Track index -> fresh prompt index: by id first, then by box IoU, then clicks."""
    matches = _by_id(tracks, fresh, settings)
    matches.update(_by_iou(predicted, fresh, matches, settings))
    matches.update(_clicks(tracks, predicted, fresh, set(matches.values())))
    return matches


def _by_id(
    tracks: Sequence[Track], fresh: Sequence[Prompt], settings: TrackingSettings
) -> dict[int, int]:
    """Track index -> fresh prompt index, by id: a prompt (PromptArray) carrying the id of
    a live prompt-started track refreshes it, as does a detection carrying the id of a live
    detector-started track with match_detection_ids; made-up ids never match."""
    by_id = {(t.from_detector, t.detection_id): i for i, t in enumerate(tracks)}
    matches: dict[int, int] = {}
    for prompt_index, prompt in enumerate(fresh):
        if not prompt.id or prompt.generated_id or (prompt.box is None and not prompt.points):
            continue
        if prompt.from_detector and not settings.match_detection_ids:
            continue
        track_index = by_id.get((prompt.from_detector, prompt.id))
        if track_index is not None and track_index not in matches:
            matches[track_index] = prompt_index
    return matches


def _by_iou(
    predicted: Sequence[Box],
    fresh: Sequence[Prompt],
    taken: dict[int, int],
    settings: TrackingSettings,
) -> dict[int, int]:
    """Track index -> fresh prompt index, greedily by descending box IoU, among the tracks
    and prompts not `taken` (by id) already."""
    pairs = []
    used = set(taken.values())
    for track_index, track_box in enumerate(predicted):
        if track_index in taken:
            continue
        for prompt_index, prompt in enumerate(fresh):
            if prompt.box is None or prompt_index in used:
                continue
            iou = box_iou(track_box, prompt.box)
            if iou >= settings.iou_match:
                pairs.append((-iou, track_index, prompt_index))
    pairs.sort()
    matches: dict[int, int] = {}
    taken: set[int] = set()
    for _, track_index, prompt_index in pairs:
        if track_index not in matches and prompt_index not in taken:
            matches[track_index] = prompt_index
            taken.add(prompt_index)
    return matches


def _clicks(
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
        foreground = [
            point
            for point, label in zip(prompt.points, prompt.point_labels, strict=True)
            if label == 1
        ]
        inside = [
            (area(predicted[i]), i)
            for i, track in enumerate(tracks)
            if track.click and i not in matches and holds_points(predicted[i], foreground)
        ]
        if inside:
            matches[min(inside)[1]] = prompt_index
    return matches
