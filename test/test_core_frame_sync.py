"""Prompt/frame matching by stamp: policies, waiting, dropping with reasons, clock jumps."""

from __future__ import annotations

import pytest

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.stream import frame_sync as fs

MS = 1_000_000
PROMPT = (Prompt(id="p", box=(1, 1, 5, 5)),)


def frame(stamp_ms: int, frame_id: str = "cam") -> fs.Frame:
    return fs.Frame(stamp_ms * MS, frame_id, payload=f"image@{stamp_ms}", received=0.0)


def request(stamp_ms: int, received: float = 0.0, frame_id: str = "cam") -> fs.PromptRequest:
    return fs.PromptRequest(stamp_ms * MS, frame_id, PROMPT, received)


def test_exact_matches_frames_arriving_before_and_after_prompts():
    sync = fs.FrameSync("exact", max_wait=0.5)
    sync.add_frame(frame(100))
    sync.add_request(request(100))
    matched = sync.pop_ready(now=0.0)
    assert matched is not None and matched[0].payload == "image@100"
    sync.add_request(request(133))  # the prompt comes first ...
    assert sync.pop_ready(now=0.1) is None  # ... and waits
    sync.add_frame(frame(133))
    assert sync.pop_ready(now=0.2)[0].payload == "image@133"
    assert not sync.pending and not sync.dropped


def test_exact_drops_after_max_wait_and_when_older_than_cache():
    sync = fs.FrameSync("exact", max_wait=0.5, cache_size=2)
    for stamp in (100, 133, 166):
        sync.add_frame(frame(stamp))
    assert [f // MS for f in sync.frames] == [133, 166]  # oldest evicted
    sync.add_request(request(100))
    sync.add_request(request(150, received=1.0))
    assert sync.pop_ready(now=1.2) is None
    assert sync.dropped[fs.DROP_TOO_OLD] == 1
    assert sync.next_deadline() == pytest.approx(1.5)
    assert sync.pop_ready(now=1.5) is None
    assert sync.dropped[fs.DROP_TIMEOUT] == 1 and not sync.pending


def test_nearest_waits_for_a_possibly_closer_frame():
    sync = fs.FrameSync("nearest", max_offset=0.02, max_wait=1.0)
    sync.add_frame(frame(100))
    sync.add_request(request(110))
    assert sync.pop_ready(now=0.1) is None  # a frame at 110-120 could still come
    sync.add_frame(frame(118))
    assert sync.pop_ready(now=0.2)[0].payload == "image@118"
    sync.add_request(request(160))
    sync.add_frame(frame(200))
    assert sync.pop_ready(now=0.3) is None
    assert sync.dropped[fs.DROP_NO_NEAR_FRAME] == 1


def test_nearest_takes_best_within_offset_on_timeout():
    sync = fs.FrameSync("nearest", max_offset=0.02, max_wait=0.5)
    sync.add_frame(frame(100))
    sync.add_request(request(115, received=0.0))
    assert sync.pop_ready(now=0.4) is None
    assert sync.pop_ready(now=0.5)[0].payload == "image@100"


def test_latest_and_zero_stamp_use_newest_frame():
    sync = fs.FrameSync("latest")
    sync.add_frame(frame(100))
    sync.add_frame(frame(133))
    sync.add_request(request(5))
    assert sync.pop_ready(now=0.0)[0].payload == "image@133"
    exact = fs.FrameSync("exact")
    exact.add_frame(frame(100))
    exact.add_request(request(0))  # e.g. a click from a tool that leaves the stamp at zero
    assert exact.pop_ready(now=0.0)[0].payload == "image@100"


def test_frame_id_mismatch_is_dropped_and_counted():
    sync = fs.FrameSync("exact")
    sync.add_frame(frame(100, "camera_left"))
    sync.add_request(request(100, frame_id="camera_right"))
    assert sync.pop_ready(now=0.0) is None
    assert sync.dropped[fs.DROP_FRAME_ID] == 1
    sync.add_request(request(100, frame_id=""))  # an empty frame_id is not checked
    assert sync.pop_ready(now=0.0) is not None


def test_clock_jump_clears_the_cache_and_duplicates_are_ignored():
    sync = fs.FrameSync("exact")
    sync.add_frame(frame(50_000))
    sync.add_frame(frame(50_000))
    assert sync.dropped[fs.FRAMES_DUPLICATE] == 1
    sync.add_frame(frame(100))  # 50 s back: a restarted bag
    assert list(sync.frames) == [100 * MS]
    assert sync.dropped[fs.FRAMES_CLOCK_JUMP] == 1
    sync.add_frame(frame(90))  # slightly out of order: kept, cache stays sorted
    assert list(sync.frames) == [90 * MS, 100 * MS]


def test_pending_queue_is_bounded():
    sync = fs.FrameSync("exact", max_pending=3)
    for stamp in range(5):
        sync.add_request(request(1000 + stamp))
    assert len(sync.pending) == 3 and sync.dropped[fs.DROP_QUEUE_FULL] == 2
    assert [r.stamp_ns // MS for r in sync.pending] == [1002, 1003, 1004]


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInputError, match="exact, nearest, latest"):
        fs.FrameSync("closest")
    sync = fs.FrameSync()
    with pytest.raises(InvalidInputError):
        sync.configure("exact", -1.0, 0.5)


def test_newest_ready_request_of_a_source_wins():
    sync = fs.FrameSync("exact")
    for stamp in (100, 133, 166):
        sync.add_frame(frame(stamp))
    for stamp, source, received in [
        (100, "detections", 0.0),
        (133, "detections", 0.1),
        (166, "detections", 0.2),
        (100, "clicked_point", 0.15),
    ]:
        sync.add_request(fs.PromptRequest(stamp * MS, "cam", PROMPT, received, source))
    first = sync.pop_ready(now=0.3)
    second = sync.pop_ready(now=0.3)
    assert (first[1].source, first[0].stamp_ns // MS) == ("clicked_point", 100)
    assert (second[1].source, second[0].stamp_ns // MS) == ("detections", 166)
    assert sync.dropped[fs.DROP_SUPERSEDED] == 2 and not sync.pending
