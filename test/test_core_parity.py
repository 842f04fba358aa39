"""Parity with the official MobileSAM code (`mobile_sam.SamPredictor`) on real photos and on
camera-sized frames built from them (shrunk with antialiasing, where a resize differs most).

Per prompt: mask IoU >= 0.99, |predicted IoU difference| <= 1e-3, relative L2 error of the
low-res logits <= 1e-3, for the torch, onnxruntime and openvino (FP32) backends.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import camera_frame, photo

mobile_sam = pytest.importorskip("mobile_sam")
pytestmark = pytest.mark.slow

PHOTOS = ("astronaut", "coffee", "chelsea")

# Prompts per photo as fractions of (width, height), turned into pixels per image.
BOXES = np.array([[0.1, 0.1, 0.6, 0.7], [0.4, 0.3, 0.95, 0.9], [0.05, 0.5, 0.3, 0.95]])
POINTS = np.array([[[0.5, 0.5]], [[0.25, 0.3]]])  # two prompts of one foreground point
POINTS_FG_BG = np.array([[[0.3, 0.4], [0.7, 0.6]], [[0.6, 0.2], [0.2, 0.8]]])
LABELS_FG_BG = np.array([[1, 0], [1, 0]])


@pytest.fixture(scope="module")
def official_predictor(random_checkpoint):
    model = mobile_sam.sam_model_registry["vit_t"](checkpoint=str(random_checkpoint))
    model.eval()  # the official README's order; eval() also rebuilds TinyViT's bias cache
    return mobile_sam.SamPredictor(model)


def _scale(fractions: np.ndarray, image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    factors = np.array([width, height] * (fractions.shape[-1] // 2), dtype=np.float64)
    return fractions * factors


def _assert_matches(official, ours_mask, ours_score, ours_logits):
    masks, scores, logits = official
    intersection = np.logical_and(masks, ours_mask).sum()
    union = np.logical_or(masks, ours_mask).sum()
    mask_iou = 1.0 if union == 0 else intersection / union
    assert mask_iou >= 0.99, f"mask IoU {mask_iou:.4f}"
    assert np.abs(scores - ours_score).max() <= 1e-3
    relative = np.linalg.norm(logits - ours_logits) / np.linalg.norm(logits)
    assert relative <= 1e-3, f"relative L2 of logits {relative:.2e}"


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("photo_name", PHOTOS)
def test_matches_official_predictor(segmenters, official_predictor, backend, photo_name):
    image = photo(photo_name)
    segmenter = segmenters[backend]
    embedding = segmenter.encode(image)
    official_predictor.set_image(image)

    def official(**prompt):
        return official_predictor.predict(**prompt)

    boxes = _scale(BOXES, image)
    result = segmenter.decode(embedding, boxes=boxes)
    assert result.masks.shape == (len(boxes), *image.shape[:2])
    for i, box in enumerate(boxes):
        expected = official(box=box, multimask_output=False)
        _assert_matches(
            [a[0] for a in expected], result.masks[i], result.scores[i], result.low_res_logits[i]
        )

    points = _scale(POINTS, image)
    result = segmenter.decode(embedding, points=points, point_labels=np.ones(points.shape[:2]))
    for i in range(len(points)):
        expected = official(point_coords=points[i], point_labels=np.ones(1), multimask_output=False)
        _assert_matches(
            [a[0] for a in expected], result.masks[i], result.scores[i], result.low_res_logits[i]
        )

    points = _scale(POINTS_FG_BG, image)
    result = segmenter.decode(embedding, points=points, point_labels=LABELS_FG_BG, multimask=True)
    assert result.masks.shape == (2, 3, *image.shape[:2])
    assert result.low_res_logits.shape == (2, 3, 256, 256)
    for i in range(len(points)):
        expected = official(
            point_coords=points[i], point_labels=LABELS_FG_BG[i], multimask_output=True
        )
        for k in range(3):
            _assert_matches(
                [a[k] for a in expected],
                result.masks[i, k],
                result.scores[i, k],
                result.low_res_logits[i, k],
            )

    # Box and points in one prompt, then the previous logits as mask prompt.
    box = _scale(BOXES[:1], image)
    point = _scale(POINTS[:1], image)
    result = segmenter.decode(embedding, boxes=box, points=point, point_labels=np.ones((1, 1)))
    expected = official(
        point_coords=point[0], point_labels=np.ones(1), box=box[0], multimask_output=False
    )
    _assert_matches(
        [a[0] for a in expected], result.masks[0], result.scores[0], result.low_res_logits[0]
    )
    previous = result.low_res_logits
    result = segmenter.decode(embedding, boxes=box, mask_input=previous)
    expected = official(box=box[0], mask_input=previous, multimask_output=False)
    _assert_matches(
        [a[0] for a in expected], result.masks[0], result.scores[0], result.low_res_logits[0]
    )


# Robot camera sizes, a portrait frame and a 4:3 frame, as (H, W).
CAMERA_SIZES = [(720, 1280), (1080, 1920), (1080, 810), (960, 1280)]


@pytest.mark.parametrize("size", CAMERA_SIZES, ids=[f"{w}x{h}" for h, w in CAMERA_SIZES])
def test_matches_official_predictor_at_camera_sizes(segmenters, official_predictor, size):
    image = camera_frame(*size)
    official_predictor.set_image(image)
    boxes = _scale(BOXES, image)
    points = _scale(POINTS, image)
    expected_boxes = [official_predictor.predict(box=b, multimask_output=False) for b in boxes]
    expected_points = [
        official_predictor.predict(point_coords=p, point_labels=np.ones(1), multimask_output=False)
        for p in points
    ]
    for segmenter in segmenters.values():
        embedding = segmenter.encode(image)
        for prompts, expected_all in (
            ({"boxes": boxes}, expected_boxes),
            ({"points": points}, expected_points),
        ):
            result = segmenter.decode(embedding, **prompts)
            for i, expected in enumerate(expected_all):
                _assert_matches(
                    [a[0] for a in expected],
                    result.masks[i],
                    result.scores[i],
                    result.low_res_logits[i],
                )


def test_random_checkpoint_has_official_layout(random_checkpoint):
    """The generated checkpoint loads strictly into the official model, every key used."""
    import torch

    model = mobile_sam.sam_model_registry["vit_t"]()
    state = torch.load(random_checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
