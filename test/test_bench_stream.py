"""benchmarks/bench_stream: the node's per-frame work at camera rate, driven with a fast stand-in
segmenter (no model), so that its bookkeeping is checked, not its timings."""

from __future__ import annotations

import numpy as np
from doubles import BoxSegmenterDouble

from benchmarks import bench_stream
from mobilesam_ros.core.stream.stream import FrameResult


def test_every_frame_is_sent_and_each_answer_is_a_sent_frame_with_its_outputs(monkeypatch):
    built: list[tuple[FrameResult, bench_stream.Outputs]] = []
    build_outputs = bench_stream.build_outputs

    def recording(result: FrameResult) -> bench_stream.Outputs:
        outputs = build_outputs(result)  # the real work: label image, overlay, payloads
        built.append((result, outputs))
        return outputs

    monkeypatch.setattr(bench_stream, "build_outputs", recording)
    segmenter = BoxSegmenterDouble()
    run = bench_stream.run_stream(segmenter, (120, 160), count=3, rate=40.0, seconds=0.5)
    assert run.sent == 20
    assert 1 <= run.answered <= run.sent and len(run.latencies_ms) == run.answered
    assert len(built) == run.answered
    stamps = [result.frame.stamp_ns for result, _ in built]
    assert stamps == sorted(set(stamps))  # each frame answered at most once, in order
    for result, outputs in built:
        assert [r.prompt.id for r in result.instances] == ["d0", "d1", "d2"]
        assert len(outputs.mask_payloads) == 3 and outputs.labels.shape == (120, 160)
        assert outputs.overlay.shape == (120, 160, 3)
        # Label i + 1 covers instance i's pixels where it is on top (the double's masks are
        # their boxes, so each label appears).
        assert set(np.unique(outputs.labels)) <= {0, 1, 2, 3} and outputs.labels.max() > 0
        assert outputs.refined_boxes == [r.crop.box for r in result.instances]
    assert {"encode", "outputs"} <= set(run.stages_ms)
    text = bench_stream.report((120, 160), 3, 40.0, run)
    assert f"sent {run.sent}, answered {run.answered}" in text
