"""Track identity: prompt ids, detection ids, and the bound on live tracks.

The decoder doubles make the failure case of random weights reproducible: masks that cover most
of the frame, whose boxes overlap no prompt box well, so box IoU cannot associate anything.
"""

from __future__ import annotations

import numpy as np
from test_core_tracking import detect, run, still_scene
from tracking_scenes import HEIGHT, WIDTH

from mobilesam_ros.core.prompts import PROMPTED, PROPAGATED, Prompt, PromptMask
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream import tracking as tr


class FrameFillingDecoder:
    """Every prompt's mask covers the whole frame but a 4-pixel border (as random weights do)."""

    def __call__(self, prompts):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[4:-4, 4:-4] = True
        logits = np.full((256, 256), 8.0, np.float32)
        return [PromptMask.from_mask(p.prompt, mask, 0.9, logits) for p in prompts]


def prompt(prompt_id, box):
    return Prompt(id=prompt_id, box=box)


def summary(out):
    return [(m.track_id, m.prompt.id, m.origin) for m in out]


def test_a_prompt_with_a_live_tracks_id_refreshes_it_whatever_the_boxes():
    scene = still_scene()
    a, b = (obj.box(0) for obj in scene.objects)
    tracker = tr.Tracker()
    assert summary(run(tracker, scene, 0, 0.0, [prompt("cup", a)])) == [("t1", "cup", PROMPTED)]
    # The sender names the same object again, with a box that overlaps the track's not at all.
    out = run(tracker, scene, 1, 0.1, [prompt("cup", b)])
    assert summary(out) == [("t1", "cup", PROMPTED)]
    assert [t.track_id for t in tracker.tracks] == ["t1"]


def test_repeated_prompt_ids_on_frame_filling_masks_answer_each_id_once():
    """The issue's case: the same 10 ids on every 10th frame, masks that fill the frame."""
    scene = still_scene()
    decoder = FrameFillingDecoder()
    tracker = tr.Tracker(TrackingSettings(min_iou=0.0))
    boxes = [(10.0 + 40 * i, 20.0, 45.0 + 40 * i, 60.0) for i in range(10)]
    ids = [f"o{i}" for i in range(10)]
    for frame in range(31):
        named = frame % 10 == 0
        fresh = [prompt(i, box) for i, box in zip(ids, boxes, strict=True)] if named else []
        out = run(tracker, scene, frame, frame / 10, fresh, decoder)
        assert sorted(m.prompt.id for m in out) == sorted(ids), frame
        assert len(tracker.tracks) == 10
    assert [t.track_id for t in tracker.tracks] == [f"t{i}" for i in range(1, 11)]


def test_detections_refresh_by_id_only_when_asked_and_never_by_made_up_ids():
    scene = still_scene()
    a, b = (obj.box(0) for obj in scene.objects)
    by_box = tr.Tracker()
    run(by_box, scene, 0, 0.0, [detect(a, detection_id="7")])
    out = run(by_box, scene, 1, 0.1, [detect(b, detection_id="7")])  # same id, elsewhere
    assert [m.track_id for m in out if m.origin == PROMPTED] == ["t2"]  # box IoU decides
    by_id = tr.Tracker(TrackingSettings(match_detection_ids=True))
    run(by_id, scene, 0, 0.0, [detect(a, detection_id="7")])
    out = run(by_id, scene, 1, 0.1, [detect(b, detection_id="7")])
    assert summary(out) == [("t1", "7", PROMPTED)]  # a tracker's id (yolo_ros) decides
    made_up = tr.Tracker(TrackingSettings(match_detection_ids=True))
    first = Prompt(id="d0", box=a, from_detector=True, generated_id=True)
    run(made_up, scene, 0, 0.0, [first])
    second = Prompt(id="d0", box=b, from_detector=True, generated_id=True)
    out = run(made_up, scene, 1, 0.1, [second])
    assert [m.track_id for m in out if m.origin == PROMPTED] == ["t2"]


def test_live_tracks_are_bounded_and_the_oldest_propagated_end_first():
    scene = still_scene()
    decoder = FrameFillingDecoder()
    tracker = tr.Tracker(TrackingSettings(max_tracks=3, min_iou=0.0))
    boxes = [(10.0 + 40 * i, 20.0, 45.0 + 40 * i, 60.0) for i in range(5)]
    run(tracker, scene, 0, 0.0, [prompt(f"p{i}", boxes[i]) for i in range(3)], decoder)
    out = run(tracker, scene, 1, 0.1, [prompt("p3", boxes[3]), prompt("p4", boxes[4])], decoder)
    assert summary(out) == [
        ("t4", "p3", PROMPTED),
        ("t5", "p4", PROMPTED),
        ("t3", "p2", PROPAGATED),
    ]
    assert tracker.counts[tr.ENDED_OVER_MAX_TRACKS] == 2
    # More fresh prompts than max_tracks: all are answered, the newest three live on.
    many = [prompt(f"q{i}", boxes[i]) for i in range(5)]
    out = run(tracker, scene, 2, 0.2, many, decoder)
    assert [m.prompt.id for m in out if m.origin == PROMPTED] == ["q0", "q1", "q2", "q3", "q4"]
    assert [t.detection_id for t in tracker.tracks] == ["q2", "q3", "q4"]
