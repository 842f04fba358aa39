"""The stream pipeline with arrays and a fake clock: job choice, failures, settings, sync.

The segmenter is `doubles.BoxSegmenterDouble` (a prompt's "mask" is its box): these test
scheduling and bookkeeping, not segmentation.
"""

from __future__ import annotations

import logging

import pytest
from doubles import BoxSegmenterDouble, FakeClock
from helpers import photo

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import DecodedImage
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.core.stream import failures as fl
from mobilesam_ros.core.stream import frame_sync as fs
from mobilesam_ros.core.stream import pipeline as pl
from mobilesam_ros.core.stream import stream as st
from mobilesam_ros.core.stream.tracking import ENDED_CLOCK_JUMP, ENDED_MAX_AGE

SECOND_NS = 1_000_000_000
FRAME_NS = SECOND_NS // 30


IMAGE = photo("astronaut")[:240, :320]


def decode_payload(payload):
    if isinstance(payload, Exception):
        raise payload
    return DecodedImage(payload, "rgb")


def node_settings(tracking=False, cache_size=30, **changes):
    """NodeSettings from parameter values, e.g. {"sync.max_wait": 0.5}."""
    values = {"tracking.enabled": tracking, "sync.cache_size": cache_size, **changes}
    return NodeSettings().from_values(lambda name: values.get(name, DEFAULTS[name]))


DEFAULTS = NodeSettings().values()


def make_pipeline(tracking=False, listening=lambda stream: True, cache_size=30, **changes):
    clock = FakeClock()
    segmenter = BoxSegmenterDouble()
    pipeline = pl.StreamPipeline(
        decode_payload,
        node_settings(tracking, cache_size, **changes),
        segmenter=segmenter,
        anyone_listening=listening,
        clock=clock,
    )
    return pipeline, segmenter, clock


def sync_of(pipeline):
    return pipeline.streams[""].sync


def tracker_of(pipeline):
    return pipeline.streams[""].tracker


def add_frame(pipeline, clock, stamp_ns, pixels=None):
    pixels = IMAGE.copy() if pixels is None else pixels
    pipeline.add_frame(fs.Frame(stamp_ns, "camera", pixels, clock()))
    return pixels


def request(clock, stamp_ns, *boxes, source="detections", frame_id="camera"):
    detector = source == "detections"
    prompts = [Prompt(id=f"p{i}", box=box, from_detector=detector) for i, box in enumerate(boxes)]
    return fs.PromptRequest(stamp_ns, frame_id, prompts, clock(), source)


def drain(pipeline, calls=20):
    return [r for r in (pipeline.process_next(timeout=0) for _ in range(calls)) if r is not None]


def test_prompts_before_and_after_their_frame_are_answered_on_it():
    pipeline, _, clock = make_pipeline()
    pipeline.add_request(request(clock, 5 * SECOND_NS, (10, 10, 60, 60)))
    assert drain(pipeline) == []  # waiting for its frame
    add_frame(pipeline, clock, 4 * SECOND_NS)
    pixels = add_frame(pipeline, clock, 5 * SECOND_NS)
    (result,) = drain(pipeline)
    assert result.frame.stamp_ns == 5 * SECOND_NS and result.frame.payload is pixels
    assert [r.prompt.id for r in result.instances] == ["p0"]
    assert result.instances[0].low_res_logits is None  # not copied: only tracking reads them
    pipeline.add_request(request(clock, 4 * SECOND_NS, (1, 1, 9, 9), (20, 20, 30, 30)))
    (late,) = drain(pipeline)
    assert late.frame.stamp_ns == 4 * SECOND_NS and len(late.instances) == 2
    assert pipeline.totals()[st.PROMPT_MESSAGES_ANSWERED] == 2


def test_prompts_time_out_on_the_clock_and_old_frames_are_evicted():
    pipeline, _, clock = make_pipeline(cache_size=3, **{"sync.max_wait": 0.5})
    for index in range(5):
        add_frame(pipeline, clock, (10 + index) * SECOND_NS)
    pipeline.add_request(request(clock, 10 * SECOND_NS, (1, 1, 9, 9)))  # evicted frame
    pipeline.add_request(request(clock, 99 * SECOND_NS, (1, 1, 9, 9), source="prompts"))
    assert drain(pipeline) == []
    clock.now += 0.6
    assert drain(pipeline) == []
    counters = pipeline.counters()
    assert counters[fs.DROP_TOO_OLD] == 1 and counters[fs.DROP_TIMEOUT] == 1
    assert pipeline.queue_sizes() == (0, 3)


def test_nobody_listening_with_live_tracks_costs_one_skip_per_frame_and_tracks_age_out():
    listening = [True]
    pipeline, segmenter, clock = make_pipeline(
        tracking=True, listening=lambda stream: listening[0], **{"tracking.max_age": 0.5}
    )
    add_frame(pipeline, clock, SECOND_NS)
    pipeline.add_request(request(clock, SECOND_NS, (100, 60, 180, 150)))
    (first,) = drain(pipeline)
    assert [r.track_id for r in first.instances] == ["t1"] and tracker_of(pipeline).active
    listening[0] = False  # rviz closed
    frames = 30
    for index in range(1, frames + 1):  # one simulated second of a 30 Hz camera
        add_frame(pipeline, clock, SECOND_NS + index * FRAME_NS)
        clock.now += 1 / 30
        assert drain(pipeline, calls=50) == []
    skipped = pipeline.totals()[st.IMAGES_SKIPPED]
    # One skip per frame while the track lived (0.5 s), then no job at all: never a busy loop.
    assert 14 <= skipped <= 16
    assert len(segmenter.encoded) == 1 and len(segmenter.calls) == 1
    assert not tracker_of(pipeline).active
    assert pipeline.counters()[ENDED_MAX_AGE] == 1


def test_a_failing_frame_is_counted_handled_once_and_the_next_frame_is_served(caplog):
    pipeline, segmenter, clock = make_pipeline(tracking=True)
    add_frame(pipeline, clock, SECOND_NS)
    pipeline.add_request(request(clock, SECOND_NS, (100, 60, 180, 150)))
    drain(pipeline)
    bad = add_frame(pipeline, clock, SECOND_NS + FRAME_NS)
    segmenter.fail_encode.add(id(bad))
    with caplog.at_level(logging.WARNING):
        assert drain(pipeline) == []
    assert pipeline.counters()[fl.failure_counter(fl.STAGE_ENCODE)] == 1  # not retried
    assert "encoder crashed" in caplog.text and "Traceback" in caplog.text
    add_frame(pipeline, clock, SECOND_NS + 2 * FRAME_NS)
    (served,) = drain(pipeline)
    assert served.frame.stamp_ns == SECOND_NS + 2 * FRAME_NS and served.instances
    assert not pipeline.failing


def test_repeated_inference_failures_turn_failing_until_a_success():
    pipeline, segmenter, clock = make_pipeline()
    for index in range(fl.ERROR_AFTER_FAILURES):
        stamp = (index + 1) * SECOND_NS
        segmenter.fail_encode.add(id(add_frame(pipeline, clock, stamp)))
        pipeline.add_request(request(clock, stamp, (1, 1, 50, 50)))
        assert drain(pipeline) == []
    assert pipeline.failing
    assert pipeline.counters()[fl.failure_counter(fl.STAGE_ENCODE)] == fl.ERROR_AFTER_FAILURES
    add_frame(pipeline, clock, 9 * SECOND_NS)
    pipeline.add_request(request(clock, 9 * SECOND_NS, (1, 1, 50, 50)))
    assert drain(pipeline) and not pipeline.failing


def test_bad_images_are_rejected_and_other_decode_errors_counted_by_stage():
    pipeline, _, clock = make_pipeline()
    for stamp, payload in ((1, InvalidInputError("odd encoding")), (2, OSError("truncated"))):
        pipeline.add_frame(fs.Frame(stamp * SECOND_NS, "camera", payload, clock()))
        pipeline.add_request(request(clock, stamp * SECOND_NS, (1, 1, 9, 9)))
        assert drain(pipeline) == []
    counters = pipeline.counters()
    assert counters[fl.IMAGES_REJECTED] == 1
    assert counters[fl.failure_counter(fl.STAGE_IMAGE_DECODE)] == 1
    assert not pipeline.failing  # bad input is not an inference failure


def test_invalid_prompts_are_rejected_and_the_rest_answered():
    pipeline, _, clock = make_pipeline(max_prompts=2)
    add_frame(pipeline, clock, SECOND_NS)
    boxes = [(50, 50, 10, 10), (5, 5, 40, 40), (1, 1, 2, 2)]  # inverted, fine, over the limit
    pipeline.add_request(request(clock, SECOND_NS, *boxes))
    (result,) = drain(pipeline)
    assert [r.prompt.id for r in result.instances] == ["p1"]
    counters = pipeline.counters()
    assert counters[fl.PROMPTS_REJECTED] == 1 and counters[fl.PROMPTS_OVER_LIMIT] == 1


def test_settings_change_between_jobs_never_during_one():
    pipeline, segmenter, clock = make_pipeline()
    pipeline.configure(node_settings(mask_threshold=2.5, **{"sync.policy": "latest"}))
    assert segmenter.mask_threshold == 0.0 and sync_of(pipeline).policy == "exact"  # queued
    add_frame(pipeline, clock, 7 * SECOND_NS)
    pipeline.add_request(request(clock, 3 * SECOND_NS, (1, 1, 50, 50)))  # no such frame
    (result,) = drain(pipeline)  # applied before the job: "latest" answers on the newest
    assert segmenter.mask_threshold == 2.5 and result.frame.stamp_ns == 7 * SECOND_NS


def test_clock_jump_back_clears_the_cache_and_ends_tracks():
    pipeline, _, clock = make_pipeline(tracking=True)
    add_frame(pipeline, clock, 100 * SECOND_NS)
    pipeline.add_request(request(clock, 100 * SECOND_NS, (100, 60, 180, 150)))
    drain(pipeline)
    add_frame(pipeline, clock, 5 * SECOND_NS)  # a bag restarted
    pipeline.add_request(request(clock, 5 * SECOND_NS, (10, 10, 60, 60)))
    (after_jump,) = drain(pipeline)
    assert after_jump.frame.stamp_ns == 5 * SECOND_NS
    assert [(r.track_id, r.prompt.id) for r in after_jump.instances] == [("t2", "p0")]
    counters = pipeline.counters()
    assert counters[fs.FRAMES_CLOCK_JUMP] == 1 and counters[ENDED_CLOCK_JUMP] == 1


def test_frames_before_the_model_are_counted_and_served_once_it_is_attached():
    pipeline, segmenter, clock = make_pipeline()
    pipeline.segmenter = None
    add_frame(pipeline, clock, SECOND_NS)
    pipeline.add_request(request(clock, SECOND_NS, (1, 1, 50, 50)))
    assert drain(pipeline) == []
    assert pipeline.totals()[st.IMAGES_WHILE_LOADING] == 1
    pipeline.attach(segmenter)
    assert len(drain(pipeline)) == 1


def test_prompts_whose_wait_ends_while_the_model_loads_are_counted_as_such(caplog):
    """Not as prompts that waited for lost camera frames (whose hint would mislead)."""
    pipeline, segmenter, clock = make_pipeline()
    pipeline.detach()
    add_frame(pipeline, clock, SECOND_NS)
    with caplog.at_level(logging.WARNING):
        for second in (1, 2):
            pipeline.add_request(request(clock, second * SECOND_NS, (1, 1, 50, 50)))
        clock.now += pipeline.settings.sync.max_wait
        assert drain(pipeline) == []
    counters = pipeline.counters()
    assert counters[st.DROP_WHILE_LOADING] == 2 and counters[fs.DROP_TIMEOUT] == 0
    assert pipeline.totals()[st.PROMPTS_WHILE_LOADING] == 2
    said = [
        r.getMessage() for r in caplog.records if "while the model is loading" in r.getMessage()
    ]
    assert len(said) == 1 and st.DROP_WHILE_LOADING in said[0]
    pipeline.attach(segmenter)
    pipeline.add_request(request(clock, SECOND_NS, (1, 1, 50, 50)))
    assert len(drain(pipeline)) == 1  # served once loaded; nothing left of the dropped ones


def test_failure_log_counts_every_report_and_logs_once_per_period(caplog):
    clock = FakeClock()
    failures = fl.FailureLog(logging.getLogger("test.failures"), period=5.0, clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            failures.report("images_rejected", "image rejected")
        clock.now += 5.0
        failures.report("images_rejected", "image rejected", count=2)
    assert failures.snapshot()["images_rejected"] == 5
    assert [r.getMessage() for r in caplog.records] == [
        "image rejected (counter images_rejected: 1)",
        "image rejected (counter images_rejected: 5)",
    ]


@pytest.mark.parametrize("tracking", [False, True])
def test_moved_prompts_of_an_older_frame_meet_the_newest(tracking):
    """A slow detector's boxes for frame t, answered with tracking on frame t+k."""
    pipeline, _, clock = make_pipeline(tracking=tracking)
    add_frame(pipeline, clock, SECOND_NS)
    add_frame(pipeline, clock, SECOND_NS + FRAME_NS)
    pipeline.add_request(request(clock, SECOND_NS, (100, 60, 180, 150)))
    (result,) = drain(pipeline)
    expected = SECOND_NS + FRAME_NS if tracking else SECOND_NS
    assert result.frame.stamp_ns == expected
    # A still image: the flow is zero, the moved box equals the given one.
    assert result.instances[0].prompt.box == pytest.approx((100, 60, 180, 150), abs=0.5)
