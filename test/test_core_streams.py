"""Several streams sharing one model, and on-demand requests answered between stream frames.

The stand-in segmenter of doubles.py (a prompt's "mask" is its box): these test
scheduling and bookkeeping, not segmentation.
"""

from __future__ import annotations

import pytest
from doubles import BoxSegmenterDouble, FakeClock
from test_core_pipeline import IMAGE, SECOND_NS, decode_payload, node_settings, request

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import DecodedImage
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.stream import frame_sync as fs
from mobilesam_ros.core.stream import pipeline as pl
from mobilesam_ros.core.stream.requests import SegmentRequest


def two_cameras(tracking=False):
    clock = FakeClock()
    segmenter = BoxSegmenterDouble()
    pipeline = pl.StreamPipeline(
        decode_payload,
        node_settings(tracking),
        streams=("front", "left"),
        segmenter=segmenter,
        clock=clock,
    )
    return pipeline, segmenter, clock


def feed(pipeline, clock, stream, stamp_ns, box=(10, 10, 60, 60)):
    pipeline.add_frame(fs.Frame(stamp_ns, "camera", IMAGE.copy(), clock()), stream)
    pipeline.add_request(request(clock, stamp_ns, box), stream)


def test_streams_share_the_model_and_keep_their_own_frames():
    pipeline, segmenter, clock = two_cameras()
    feed(pipeline, clock, "front", SECOND_NS)
    feed(pipeline, clock, "left", SECOND_NS, box=(5, 5, 20, 20))  # the same stamp, other camera
    results = [pipeline.process_next(timeout=0) for _ in range(2)]
    assert sorted(r.stream for r in results) == ["front", "left"]
    by_stream = {r.stream: r for r in results}
    assert by_stream["left"].instances[0].crop.box == (5, 5, 20, 20)
    assert by_stream["front"].frame is not by_stream["left"].frame
    assert len(segmenter.encoded) == 2  # one encoder, both frames


def test_a_busy_camera_does_not_starve_the_other():
    pipeline, _, clock = two_cameras()
    served = []
    for index in range(1, 7):
        feed(pipeline, clock, "front", index * SECOND_NS)
        feed(pipeline, clock, "front", index * SECOND_NS + 1)  # twice as many as left
        feed(pipeline, clock, "left", index * SECOND_NS)
        result = pipeline.process_next(timeout=0)
        served.append(result.stream)
    # Turns alternate: each camera had its share although front had more waiting.
    assert served.count("left") == 3 and served.count("front") == 3


def test_an_on_demand_request_reuses_the_cached_embedding_and_leaves_tracks_alone():
    pipeline, segmenter, clock = two_cameras(tracking=True)
    feed(pipeline, clock, "front", SECOND_NS)
    (tracked,) = [r for r in (pipeline.process_next(timeout=0) for _ in range(3)) if r]
    tracker = pipeline.streams["front"].tracker
    tracks_before = [t.track_id for t in tracker.tracks]
    encoded = len(segmenter.encoded)
    reply = pipeline.submit(
        SegmentRequest([Prompt(id="a", box=(1, 1, 30, 30))], stream="front", stamp_ns=SECOND_NS)
    )
    assert pipeline.process_next(timeout=0) is None  # not published: replied
    answer = reply.result(timeout=0)
    assert [m.prompt.id for m in answer.instances] == ["a"] and answer.stamp_ns == SECOND_NS
    assert answer.image is tracked.frame.decoded
    assert len(segmenter.encoded) == encoded  # the frame's embedding, not a second encode
    assert [t.track_id for t in tracker.tracks] == tracks_before


def test_an_on_demand_request_with_its_own_image():
    pipeline, segmenter, _ = two_cameras()
    image = DecodedImage(IMAGE.copy(), "rgb")
    reply = pipeline.submit(SegmentRequest([Prompt(id="x", box=(2, 2, 40, 40))], image=image))
    pipeline.process_next(timeout=0)
    answer = reply.result(timeout=0)
    assert answer.instances[0].crop.box == (2, 2, 40, 40) and len(segmenter.encoded) == 1
    assert pipeline.streams["front"].sync.frames == {}  # nothing cached for a stream


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SegmentRequest([Prompt(id="a", box=(1, 1, 9, 9))], stream="front", stamp_ns=7), "stamp 7"),
        (SegmentRequest([Prompt(id="a", box=(1, 1, 9, 9))], stream="rear"), "no stream 'rear'"),
        (SegmentRequest([Prompt(id="bad", box=(50, 50, 10, 10))], stream="front"), "bad"),
    ],
)
def test_bad_on_demand_requests_get_a_clear_error(request_, message):
    pipeline, _, clock = two_cameras()
    pipeline.add_frame(fs.Frame(SECOND_NS, "camera", IMAGE.copy(), clock()), "front")
    reply = pipeline.submit(request_)
    pipeline.process_next(timeout=0)
    with pytest.raises(InvalidInputError, match=message):
        reply.result(timeout=0)
    # The worker goes on: the next request is answered.
    ok = pipeline.submit(SegmentRequest([Prompt(id="ok", box=(1, 1, 9, 9))], stream="front"))
    pipeline.process_next(timeout=0)
    assert ok.result(timeout=0).instances[0].prompt.id == "ok"


def test_waiting_requests_are_bounded():
    pipeline, _, _ = two_cameras()
    replies = [
        pipeline.submit(SegmentRequest([Prompt(id="a", box=(1, 1, 9, 9))], stream="front"))
        for _ in range(pl.MAX_PENDING_REQUESTS + 1)
    ]
    with pytest.raises(InvalidInputError, match="wait already"):
        replies[-1].result(timeout=0)
    assert not any(reply.done() for reply in replies[:-1])


def test_a_camera_that_stops_does_not_stall_the_others():
    pipeline, _, clock = two_cameras()
    feed(pipeline, clock, "left", SECOND_NS)  # left sends one frame, then nothing
    answered = []
    for index in range(1, 6):
        feed(pipeline, clock, "front", index * SECOND_NS)
        clock.now += 1.0  # left's silence goes on
        while (result := pipeline.process_next(timeout=0)) is not None:
            answered.append((result.stream, result.frame.stamp_ns))
        # front's frame is answered at once, whatever left does not send
        assert ("front", index * SECOND_NS) in answered
    assert [a for a in answered if a[0] == "left"] == [("left", SECOND_NS)]
    assert pipeline.stream_report("front")[0]["prompt messages answered"] == 5


def test_tracks_of_different_cameras_never_share_an_id():
    pipeline, _, clock = two_cameras(tracking=True)
    feed(pipeline, clock, "front", SECOND_NS)
    feed(pipeline, clock, "left", SECOND_NS)
    ids = {}
    for _ in range(2):
        result = pipeline.process_next(timeout=0)
        ids[result.stream] = [instance.track_id for instance in result.instances]
    assert ids == {"front": ["front/t1"], "left": ["left/t1"]}


def test_each_camera_reports_its_own_totals_and_waiting_prompts():
    pipeline, _, clock = two_cameras()
    feed(pipeline, clock, "front", SECOND_NS)
    pipeline.add_request(request(clock, 5 * SECOND_NS, (1, 1, 9, 9)), "left")  # no image yet
    assert pipeline.process_next(timeout=0).stream == "front"
    front, left = pipeline.stream_report("front"), pipeline.stream_report("left")
    assert front[0]["images received"] == 1 and left[0]["images received"] == 0
    assert front[2] == 0 and left[2] == 1  # left's prompts still wait for their image
