"""Mixed prompts are decoded in grouped batches and come back in their order."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.prompts import Prompt, decode_prompts


def test_mixed_prompts_keep_order_and_match_single_calls(segmenters, monkeypatch):
    segmenter = segmenters["onnxruntime"]
    image = photo("chelsea")
    embedding = segmenter.encode(image)
    prompts = [
        Prompt(id="box1", box=(10, 10, 200, 250)),
        Prompt(id="click", points=((150, 120),), point_labels=(1,)),
        Prompt(id="box2", box=(180, 40, 440, 290)),
        Prompt(
            id="box+pts",
            box=(30, 30, 300, 280),
            points=((100, 100), (20, 250)),
            point_labels=(1, 0),
        ),
    ]
    calls = []
    decode = segmenter.decode

    def counting_decode(*args, **kwargs):
        calls.append(kwargs)
        return decode(*args, **kwargs)

    monkeypatch.setattr(segmenter, "decode", counting_decode)
    results = decode_prompts(segmenter, embedding, prompts)
    assert [r.prompt.id for r in results] == ["box1", "click", "box2", "box+pts"]
    assert len(calls) == 3  # the two plain boxes share one call
    monkeypatch.setattr(segmenter, "decode", decode)
    single = segmenter.decode(embedding, boxes=[prompts[2].box])
    np.testing.assert_allclose(results[2].low_res_logits, single.low_res_logits[0], atol=2e-4)
    assert results[2].predicted_iou == pytest.approx(float(single.scores[0]), abs=1e-4)
    assert results[0].mask.shape == image.shape[:2]


def test_prompts_without_content_are_refused(segmenters):
    segmenter = segmenters["onnxruntime"]
    embedding = segmenter.encode(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="neither a box nor points"):
        decode_prompts(segmenter, embedding, [Prompt(id="empty")])
    with pytest.raises(InvalidInputError, match="labels"):
        decode_prompts(segmenter, embedding, [Prompt(points=((1, 1),), point_labels=())])


def test_mask_hints_for_some_prompts_only_match_separate_calls(segmenters):
    """A hint for one prompt and none for another, in one call, equal two separate calls."""
    segmenter = segmenters["onnxruntime"]
    image = photo("chelsea")
    embedding = segmenter.encode(image)
    boxes = [(10, 10, 200, 250), (180, 40, 440, 290)]
    first = segmenter.decode(embedding, boxes=boxes)
    hint = first.low_res_logits[0]
    mixed = segmenter.decode(embedding, boxes=boxes, mask_input=[hint, None])
    with_hint = segmenter.decode(embedding, boxes=boxes[:1], mask_input=hint[None])
    without = segmenter.decode(embedding, boxes=boxes[1:])
    np.testing.assert_allclose(mixed.low_res_logits[0], with_hint.low_res_logits[0], atol=2e-4)
    np.testing.assert_allclose(mixed.low_res_logits[1], without.low_res_logits[0], atol=2e-4)
    assert not np.allclose(mixed.low_res_logits[0], first.low_res_logits[0], atol=1e-2)
