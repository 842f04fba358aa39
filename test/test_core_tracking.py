"""Tracking: association, birth, death and ids of tracks, and the decoding of a frame's plan.

The tracker-logic tests decode with `SceneDecoderDouble`, a deterministic stand-in that returns
the scene's ground-truth masks: they test the bookkeeping, not segmentation quality. Box motion
itself is tested in test_core_flow.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from doubles import BoxSegmenterDouble
from tracking_scenes import (
    HEIGHT,
    TOLERANCE_PX,
    WIDTH,
    MovingObject,
    Scene,
    SceneDecoderDouble,
    centered_patch,
    edge_error,
)

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.preprocess import FrameGeometry
from mobilesam_ros.core.prompts import PROMPTED, PROPAGATED, Prompt
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream import tracking as tr
from mobilesam_ros.core.stream.flow import FlowFrame

# --- tracker logic, with the decoder double ------------------------------------------------------


def still_scene() -> Scene:
    return Scene(
        "coffee",
        [
            MovingObject("chelsea", centered_patch("chelsea", 160, 140), (60.0, 80.0)),
            MovingObject("astronaut", centered_patch("astronaut", 140, 160), (400.0, 260.0)),
        ],
    )


def detect(box, class_id="thing", score=0.5, detection_id="", pad=0.0) -> Prompt:
    x0, y0, x1, y1 = box
    return Prompt(
        id=detection_id,
        box=(x0 - pad, y0 - pad, x1 + pad, y1 + pad),
        class_id=class_id,
        detection_score=score,
        source=detection_id,
        from_detector=True,
    )


def run(tracker, scene, frame, now, fresh=(), double=None):
    image, masks = scene.render(frame)
    double = double or SceneDecoderDouble(masks)
    double.masks = masks
    return tracker.step(FlowFrame(image), now, list(fresh), double)


def test_matching_detection_refreshes_its_track_and_a_far_one_starts_a_track():
    scene = still_scene()
    a, b = (obj.box(0) for obj in scene.objects)
    tracker = tr.Tracker(TrackingSettings(max_age=5.0))
    out = run(tracker, scene, 0, 0.0, [detect(a, "cat", 0.4, "d0")])
    assert [(m.track_id, m.prompt.id, m.prompt.class_id) for m in out] == [("t1", "d0", "cat")]
    assert np.array_equal(out[0].mask, scene.render(0)[1][0])
    refresh = detect(a, "kitten", 0.8, "d1", pad=6.0)  # a looser box on the same object
    out = run(tracker, scene, 1, 0.1, [refresh, detect(b, "person", 0.7, "d2")])
    assert [
        (m.track_id, m.prompt.id, m.prompt.class_id, m.prompt.detection_score) for m in out
    ] == [
        ("t1", "d1", "kitten", 0.8),
        ("t2", "d2", "person", 0.7),
    ]
    assert {m.origin for m in out} == {PROMPTED}
    assert out[0].prompt.box == refresh.box  # the detection's box, not the propagated one
    assert out[0].prompt.source == "d1"
    first = tracker.tracks[0]
    assert (first.detection_id, first.last_confirmed, first.born) == ("d1", 0.1, 0.0)
    out = run(tracker, scene, 2, 0.2)  # no detections: the last detection's identity is kept
    assert [(m.track_id, m.prompt.id, m.prompt.class_id, m.prompt.source) for m in out] == [
        ("t1", "d1", "kitten", "d1"),
        ("t2", "d2", "person", "d2"),
    ]
    assert {m.origin for m in out} == {PROPAGATED}


def test_greedy_association_gives_a_track_to_its_best_detection_only():
    scene = still_scene()
    a = scene.objects[0].box(0)
    tracker = tr.Tracker()
    run(tracker, scene, 0, 0.0, [detect(a)])
    loose, tight = detect(a, "loose", pad=20.0), detect(a, "tight", pad=2.0)
    out = run(tracker, scene, 1, 0.1, [loose, tight])
    # The best box refreshes t1, the other starts t2; outputs keep the prompts' order.
    assert [(m.track_id, m.prompt.class_id) for m in out] == [("t2", "loose"), ("t1", "tight")]


def test_click_prompts_start_tracks_and_ids_are_never_reused():
    scene = still_scene()
    a = scene.objects[0].box(0)
    tracker = tr.Tracker()
    run(tracker, scene, 0, 0.0, [detect(a)])
    center = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    click = Prompt(id="click_0", points=(center,), point_labels=(1,))
    plan = tracker.plan(FlowFrame(scene.render(1)[0]), 0.1, [click])
    assert [(p.track_id, p.origin, p.detection_id) for p in plan.prompts] == [
        ("t1", tr.ORIGIN_PROPAGATED, ""),
        ("t2", tr.ORIGIN_NEW, "click_0"),
    ]
    # That plan is never decoded (the frame's work failed): the next frame plans anew.
    other = detect(scene.objects[1].box(2), "other")
    out = run(tracker, scene, 2, 0.2, [other])
    assert {m.track_id for m in out} == {"t1", "t3"}  # t2's id stays used


def test_track_ends_when_unconfirmed_for_max_age():
    scene = still_scene()
    tracker = tr.Tracker(TrackingSettings(max_age=1.0))
    run(tracker, scene, 0, 0.0, [detect(scene.objects[0].box(0))])
    alive = [bool(run(tracker, scene, 0, step / 10)) for step in range(1, 13)]
    assert alive == [True] * 10 + [False] * 2  # 1.0 s after confirmation it still lives
    assert tracker.counts[tr.ENDED_MAX_AGE] == 1
    assert not tracker.active


def test_click_tracks_outlive_max_age_and_a_second_click_replaces_rather_than_stacks():
    scene = still_scene()
    a, b = (obj.box(0) for obj in scene.objects)
    tracker = tr.Tracker(TrackingSettings(max_age=0.2))
    center = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    click = Prompt(id="click_1", points=(center,), point_labels=(1,))
    out = run(tracker, scene, 0, 0.0, [click, detect(b, "person", 0.7, "d0")])
    assert [(m.track_id, m.prompt.id) for m in out] == [("t1", "click_1"), ("t2", "d0")]
    for step in range(1, 6):  # 1 s without prompts: the detection's track ends, the click's not
        out = run(tracker, scene, 0, step / 5)
    assert [(m.track_id, m.prompt.id, m.origin) for m in out] == [("t1", "click_1", PROPAGATED)]
    again = Prompt(id="click_2", points=((center[0] + 5, center[1] - 5),), point_labels=(1,))
    out = run(tracker, scene, 0, 1.2, [again])
    assert [(m.track_id, m.prompt.id, m.origin) for m in out] == [("t1", "click_2", PROMPTED)]
    assert tracker.counts[tr.ENDED_MAX_AGE] == 1


def test_prompt_max_age_limits_prompt_tracks():
    scene = still_scene()
    tracker = tr.Tracker(TrackingSettings(max_age=10.0, prompt_max_age=0.3))
    run(tracker, scene, 0, 0.0, [Prompt(id="p", box=scene.objects[0].box(0))])
    assert run(tracker, scene, 0, 0.3) and not run(tracker, scene, 0, 0.4)


def test_track_ends_when_predicted_iou_stays_low():
    scene = still_scene()
    score_of_first = [0.9]  # the double's "predicted IoU" for object 0; object 1 stays at 0.9
    double = SceneDecoderDouble([], iou_of=lambda index: score_of_first[0] if index == 0 else 0.9)
    tracker = tr.Tracker(TrackingSettings(max_age=10.0, min_iou=0.5, min_iou_frames=3))
    run(tracker, scene, 0, 0.0, [detect(obj.box(0)) for obj in scene.objects], double)
    ids = []
    for frame, score in enumerate([0.3, 0.3, 0.9, 0.3, 0.3, 0.3, 0.3], start=1):
        score_of_first[0] = score
        ids.append([m.track_id for m in run(tracker, scene, frame, frame / 10, (), double)])
    # The streak restarts after a good frame; the third bad frame in a row ends the track.
    assert ids == [["t1", "t2"]] * 5 + [["t2"]] * 2
    assert tracker.counts[tr.ENDED_LOW_IOU] == 1


def test_detection_resets_a_low_iou_streak():
    scene = still_scene()
    double = SceneDecoderDouble([], iou_of=lambda index: 0.3)
    tracker = tr.Tracker(TrackingSettings(max_age=10.0, min_iou=0.5, min_iou_frames=2))
    box = scene.objects[0].box(0)
    run(tracker, scene, 0, 0.0, [detect(box)], double)
    assert run(tracker, scene, 1, 0.1, (), double)  # one bad frame
    assert run(tracker, scene, 2, 0.2, [detect(box)], double)  # confirmed: streak back to 0
    assert run(tracker, scene, 3, 0.3, (), double)
    assert not run(tracker, scene, 4, 0.4, (), double)


def test_track_ends_when_its_propagated_box_leaves_the_image():
    scene = Scene(
        "coffee",
        [MovingObject("chelsea", centered_patch("chelsea", 160, 140), (70.0, 150.0), (-25.0, 3.0))],
    )
    tracker = tr.Tracker(TrackingSettings(max_age=10.0))
    run(tracker, scene, 0, 0.0, [detect(scene.objects[0].box(0))])
    ended_at = None
    for frame in range(1, 12):
        out = run(tracker, scene, frame, frame / 30)
        if not out:
            ended_at = frame
            break
        assert out[0].track_id == "t1"
    # Fully out of the image from frame 10 (x_max = 229 - 25 k < 0); half out from frame 6.
    # Points that leave the image cannot be followed: the track coasts on its last velocity.
    assert ended_at is not None and 6 <= ended_at <= 10
    assert tracker.counts[tr.ENDED_LEFT_IMAGE] == 1


def test_empty_mask_ends_the_track():
    scene = still_scene()
    tracker = tr.Tracker()
    out = run(tracker, scene, 0, 0.0, [detect((300.0, 10.0, 380.0, 60.0))])  # on no object
    assert out == [] and tracker.counts[tr.ENDED_EMPTY_MASK] == 1 and not tracker.active


def test_image_size_change_and_clock_jump_end_all_tracks():
    scene = still_scene()
    tracker = tr.Tracker()
    run(tracker, scene, 0, 5.0, [detect(obj.box(0)) for obj in scene.objects])
    plan = tracker.plan(FlowFrame(np.zeros((240, 320), np.uint8)), 5.1)
    assert plan.prompts == () and set(plan.ended.values()) == {tr.ENDED_IMAGE_SIZE}
    assert not run(tracker, scene, 1, 1.0)  # time went back: not this plan, a fresh one
    assert tracker.counts[tr.ENDED_CLOCK_JUMP] == 2


def test_stale_plans_and_wrong_result_counts_are_refused():
    scene = still_scene()
    tracker = tr.Tracker()
    frame = FlowFrame(scene.render(0)[0])
    plan = tracker.plan(frame, 0.0, [detect(scene.objects[0].box(0))])
    with pytest.raises(InvalidInputError, match="decoded masks"):
        tracker.update(plan, [])
    tracker.update(plan, SceneDecoderDouble(scene.render(0)[1])(list(plan.prompts)))
    with pytest.raises(InvalidInputError, match="stale"):
        tracker.update(plan, [])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_age", 0.0),
        ("min_iou", 1.5),
        ("min_iou_frames", 0),
        ("iou_match", 0.0),
        ("margin", -0.1),
        ("min_visible", float("nan")),
        ("max_points", 2),
    ],
)
def test_bad_parameters_are_refused_by_name(name, value):
    with pytest.raises(InvalidInputError, match=f"parameter tracking.{name} = "):
        TrackingSettings(**{name: value})


def test_ids_persist_over_30_frames_with_detections_every_10th():
    objects = [
        MovingObject("chelsea", centered_patch("chelsea", 150, 130), (40.0, 40.0), (6.0, 3.0)),
        MovingObject(
            "astronaut", centered_patch("astronaut", 130, 150), (420.0, 60.0), (-4.0, 5.0), 1.01
        ),
        MovingObject(
            "rocket", centered_patch("rocket", 120, 120), (250.0, 330.0), (3.0, -2.5), 1.0, True
        ),
    ]
    scene = Scene("coffee", objects)
    tracker = tr.Tracker(TrackingSettings(max_age=0.5))
    double = SceneDecoderDouble([])
    rng = np.random.default_rng(0)
    classes = ["cat", "person", "rocket"]
    for frame in range(30):
        fresh = []
        if frame % 10 == 0:
            for index in rng.permutation(3):  # detectors list objects in any order
                jitter = rng.uniform(-3, 3, 4)
                box = tuple(np.add(objects[index].box(frame), jitter))
                fresh.append(detect(box, classes[index], 0.6, f"det{frame}_{index}"))
        out = run(tracker, scene, frame, frame / 30, fresh, double)
        planned = double.calls[-1]
        assert sorted(m.track_id for m in out) == ["t1", "t2", "t3"]
        assert [t.track_id for t in tracker.tracks] == ["t1", "t2", "t3"]
        if frame == 0:
            order = [int(p.detection_id[-1]) for p in planned]
            truth = [classes[i] for i in order]  # the first detection order assigns the ids
        if fresh:  # prompt order on detection frames, creation order in between
            assert [m.prompt.id for m in out] == [p.id for p in fresh]
        else:
            assert [m.track_id for m in out] == ["t1", "t2", "t3"]
        out.sort(key=lambda m: m.track_id)
        assert [m.prompt.class_id for m in out] == truth
        origins = {p.origin for p in planned}
        if frame == 0:
            assert origins == {tr.ORIGIN_NEW}
        elif frame % 10 == 0:
            assert origins == {tr.ORIGIN_DETECTION}
        else:
            assert origins == {tr.ORIGIN_PROPAGATED}
            assert all(p.mask_input is not None for p in planned)
            for p, class_id in zip(planned, truth, strict=True):
                expected = objects[classes.index(class_id)].box(frame)
                assert edge_error(p.predicted_box, expected) <= TOLERANCE_PX
        masks = scene.render(frame)[1]
        for result, class_id in zip(out, truth, strict=True):
            assert np.array_equal(result.mask, masks[classes.index(class_id)])
    assert not tracker.counts


# --- decoding a plan -----------------------------------------------------------------------------


GEOMETRY = FrameGeometry.for_image(HEIGHT, WIDTH)


def planned(box, origin, hint=None, track_id="t1", points=()):
    prompt = Prompt(id=track_id, box=box, points=points, point_labels=(1,) * len(points))
    return tr.TrackPrompt(prompt, origin, track_id, mask_input=hint)


def test_decode_track_prompts_passes_each_prompts_hint_in_one_call_per_structure():
    hint = np.ones((256, 256), np.float32)
    segmenter = BoxSegmenterDouble()
    box = (10.0, 10.0, 50.0, 50.0)
    prompts = [
        planned(box, tr.ORIGIN_PROPAGATED, hint, "t1"),
        planned(box, tr.ORIGIN_PROPAGATED, hint * 2, "t2"),
    ]
    out = tr.decode_track_prompts(segmenter, GEOMETRY, prompts)
    assert [m.prompt.id for m in out] == ["t1", "t2"]
    assert len(segmenter.calls) == 1
    assert np.asarray(segmenter.calls[0]["mask_input"]).shape == (2, 256, 256)
    assert segmenter.calls[0]["mask_input"][1][0, 0] == 2.0

    segmenter = BoxSegmenterDouble()
    mixed = [
        planned(box, tr.ORIGIN_PROPAGATED, hint, "t1"),
        planned(None, tr.ORIGIN_NEW, None, "t3", points=((5.0, 5.0),)),
        planned(box, tr.ORIGIN_NEW, None, "t2"),
    ]
    out = tr.decode_track_prompts(segmenter, GEOMETRY, mixed)
    assert [m.prompt.id for m in out] == ["t1", "t3", "t2"]
    assert len(segmenter.calls) == 2  # boxes together, the click alone
    boxes_call, click_call = segmenter.calls
    assert boxes_call["boxes"].shape == (2, 4)
    assert boxes_call["mask_input"][0] is hint and boxes_call["mask_input"][1] is None
    assert click_call["mask_input"] is None


def test_min_iou_zero_turns_the_iou_check_off():
    """Low predicted IoUs end tracks after min_iou_frames frames, unless min_iou is 0."""
    from helpers import photo

    from mobilesam_ros.core.prompts import Prompt, PromptMask
    from mobilesam_ros.core.stream.tracking import Tracker

    image = photo("astronaut")
    frame = FlowFrame.from_image(image)

    def low_iou_decoder(planned):
        """Test double: the prompt box filled as mask, a predicted IoU of -0.2."""
        results = []
        for item in planned:
            mask = np.zeros(frame.size, bool)
            x0, y0, x1, y1 = (int(v) for v in item.prompt.box)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
            results.append(
                PromptMask.from_mask(item.prompt, mask, -0.2, np.zeros((256, 256), np.float32))
            )
        return results

    survivors = {}
    for min_iou in (0.0, 0.5):
        tracker = Tracker(TrackingSettings(min_iou=min_iou, min_iou_frames=3, max_age=60.0))
        tracker.step(frame, 0.0, [Prompt(id="a", box=(100, 100, 300, 300))], low_iou_decoder)
        for k in range(1, 5):
            outputs = tracker.step(frame, float(k), [], low_iou_decoder)
        survivors[min_iou] = len(outputs)
    assert survivors == {0.0: 1, 0.5: 0}
