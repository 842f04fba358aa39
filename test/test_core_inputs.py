"""Bad input gets a clear ValueError (InvalidInputError) before reaching a backend."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.core import InvalidInputError, Segmenter
from mobilesam_ros.core.processing.preprocess import FrameGeometry, encode_prompts

GEOMETRY = FrameGeometry.for_image(480, 640)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((480, 640, 3), np.float32), "uint8"),
        (np.zeros((480, 640), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((480, 640, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 640, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images(segmenters, image, message):
    with pytest.raises(InvalidInputError, match=message):
        segmenters["onnxruntime"].encode(image)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({}, "give boxes, points or both"),
        ({"boxes": [[10, 10, np.nan, 50]]}, "NaN or infinite"),
        ({"boxes": [[10, 10, np.inf, 50]]}, "NaN or infinite"),
        ({"boxes": [[100, 10, 50, 50]]}, "inverted"),
        ({"boxes": [[700, 10, 800, 50]]}, "outside"),
        ({"boxes": [[1, 2, 3]]}, r"shape \(N, 4\)"),
        ({"boxes": [["a", 2, 3, 4]]}, "numeric"),
        ({"points": [[10, 10]]}, r"shape \(N, K, 2\)"),
        ({"points": [[[10, 900]]]}, "outside"),
        ({"points": [[[10, -1]]]}, "outside"),
        ({"points": [[[10, 10]]], "point_labels": [[2]]}, "foreground"),
        ({"points": [[[10, 10]]], "point_labels": [[1, 0]]}, "one per point"),
        ({"point_labels": [[1]], "boxes": [[1, 1, 5, 5]]}, "without points"),
        ({"boxes": [[1, 1, 5, 5]] * 2, "points": [[[3, 3]]]}, "same N"),
    ],
)
def test_bad_prompts(prompts, message):
    with pytest.raises(InvalidInputError, match=message):
        encode_prompts(
            GEOMETRY, prompts.get("boxes"), prompts.get("points"), prompts.get("point_labels")
        )


def test_invalid_input_is_a_value_error():
    assert issubclass(InvalidInputError, ValueError)


def test_partly_outside_box_is_kept_as_sam_keeps_it():
    coords, labels = encode_prompts(GEOMETRY, [[-20, -10, 100, 100]], None, None)
    assert coords.shape == (1, 2, 2) and labels.tolist() == [[2, 3]]
    assert coords[0, 0, 0] < 0  # not clipped


def test_prompt_packing_follows_sam_token_order():
    coords, labels = encode_prompts(
        GEOMETRY, [[0, 0, 640, 480]], [[[320, 240], [10, 20]]], [[1, 0]]
    )
    assert labels.tolist() == [[1, 0, 2, 3]]
    scale = 1024 / 640
    np.testing.assert_allclose(
        coords[0], np.array([[320, 240], [10, 20], [0, 0], [640, 480]]) * scale, rtol=1e-6
    )
    coords, labels = encode_prompts(GEOMETRY, None, [[[320, 240]]], None)
    assert labels.tolist() == [[1, -1]]  # default foreground, then SAM's padding point


def test_zero_prompts_give_empty_results(segmenters):
    segmenter = segmenters["onnxruntime"]
    embedding = segmenter.encode(np.zeros((48, 64, 3), np.uint8))
    result = segmenter.decode(embedding, boxes=np.zeros((0, 4)))
    assert result.masks.shape == (0, 48, 64) and result.masks.dtype == bool
    assert result.scores.shape == (0,) and result.low_res_logits.shape == (0, 256, 256)
    result = segmenter.decode(embedding, points=np.zeros((0, 1, 2)), multimask=True)
    assert result.masks.shape == (0, 3, 48, 64)


def test_bad_mask_input_and_foreign_embedding(segmenters):
    ort_segmenter, torch_segmenter = segmenters["onnxruntime"], segmenters["torch"]
    image = np.full((48, 64, 3), 128, np.uint8)
    embedding = ort_segmenter.encode(image)
    with pytest.raises(InvalidInputError, match="mask_input"):
        ort_segmenter.decode(embedding, boxes=[[1, 1, 20, 20]], mask_input=np.zeros((2, 256, 256)))
    with pytest.raises(InvalidInputError, match="this Segmenter"):
        torch_segmenter.decode(embedding, boxes=[[1, 1, 20, 20]])


@pytest.mark.slow
def test_decoder_memory_budget_chunks_prompts_with_the_same_results(
    random_checkpoint, cache_dir, monkeypatch
):
    from mobilesam_ros.core.segmenter import DECODER_MB_PER_PROMPT

    def segmenter_with_budget(megabytes):
        return Segmenter(
            random_checkpoint,
            backend="onnxruntime",
            cache_dir=cache_dir,
            device="cpu",
            decoder_memory_mb=megabytes,
            progress=False,
        )

    image = np.full((60, 80, 3), 90, np.uint8)
    boxes = np.array([[i % 40, i % 30, i % 40 + 30, i % 30 + 25] for i in range(7)], float)
    hints = [None, *np.random.default_rng(0).standard_normal((6, 256, 256)).astype(np.float32)]
    one_call = segmenter_with_budget(7 * DECODER_MB_PER_PROMPT)
    chunked = segmenter_with_budget(3 * DECODER_MB_PER_PROMPT + DECODER_MB_PER_PROMPT // 2)
    assert (one_call.decode_chunk_size, chunked.decode_chunk_size) == (7, 3)
    calls = []
    decode = chunked.backend.decode

    def counting_decode(*args, **kwargs):
        calls.append(len(args[1]))
        return decode(*args, **kwargs)

    monkeypatch.setattr(chunked.backend, "decode", counting_decode)
    for prompts in (
        {"boxes": boxes},
        {"boxes": boxes, "multimask": True},
        {"boxes": boxes, "mask_input": hints},
    ):
        calls.clear()
        expected = one_call.decode(one_call.encode(image), **prompts)
        got = chunked.decode(chunked.encode(image), **prompts)
        assert calls == [3, 3, 1]
        np.testing.assert_allclose(got.low_res_logits, expected.low_res_logits, atol=1e-4)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)
        np.testing.assert_array_equal(got.masks, expected.masks)


def test_constructor_refuses_bad_settings(random_checkpoint, cache_dir):
    with pytest.raises(InvalidInputError, match="backend must be one of"):
        Segmenter(random_checkpoint, backend="tflite", cache_dir=cache_dir)
    with pytest.raises(InvalidInputError, match="max_batch"):
        Segmenter(random_checkpoint, max_batch=0, cache_dir=cache_dir)
    for budget in (0, -5, 2.5, "256"):
        with pytest.raises(InvalidInputError, match="decoder_memory_mb"):
            Segmenter(random_checkpoint, decoder_memory_mb=budget, cache_dir=cache_dir)


def test_decoder_inputs_chunks_share_or_split_mask_hints():
    from mobilesam_ros.core.backends.base import DecoderInputs

    coords, labels = np.zeros((5, 2, 2), np.float32), np.zeros((5, 2), np.float32)
    shared = DecoderInputs(coords, labels)
    pieces = list(shared.chunks(2))
    assert [len(p) for p in pieces] == [2, 2, 1]
    assert all(p.mask_input is shared.mask_input for p in pieces)  # one shared "no hint" row
    hints = DecoderInputs(
        coords,
        labels,
        np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 256, 256), np.float32),
        np.ones(5, np.float32),
    )
    assert [p.mask_input[0, 0, 0, 0] for p in hints.chunks(2)] == [0.0, 2.0, 4.0]
    assert next(iter(hints.chunks(5))) is hints
