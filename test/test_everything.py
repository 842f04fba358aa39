"""Segment everything against the official `SamAutomaticMaskGenerator` on the same weights.

Random weights make every mask cover most of the frame, with predicted IoUs near 0 and no logit
above +1 (every stability score 0 at SAM's offset of 1). So the mask-for-mask comparison turns
box NMS off and sets the filters where they split these masks (predicted IoU above 0.01, a
stability offset of 0.05), so that each filter decides for some masks; NMS, crops and the
small-region removal are compared piece by piece with the official functions, and end to end.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.core import everything
from mobilesam_ros.core.settings import EverythingSettings

mobile_sam = pytest.importorskip("mobile_sam")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
amg = pytest.importorskip("mobile_sam.utils.amg")


def camera_photo(width: int, height: int) -> np.ndarray:
    return cv2.resize(photo("astronaut"), (width, height), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def official_model(random_checkpoint):
    model = mobile_sam.sam_model_registry["vit_t"](checkpoint=str(random_checkpoint))
    return model.eval()


def official_masks(model, image: np.ndarray, **settings) -> list[dict]:
    generator = mobile_sam.SamAutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    with torch.no_grad():
        return generator.generate(image)


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.logical_or(first, second).sum()
    return float(np.logical_and(first, second).sum() / union) if union else 1.0


def matched_share(masks: list[np.ndarray], others: list[np.ndarray]) -> float:
    """The share of `masks` that some mask of `others` matches with IoU >= 0.9."""
    if not masks:
        return 1.0
    return sum(any(mask_iou(m, o) >= 0.9 for o in others) for m in masks) / len(masks)


# --- the pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize("side", [1, 4, 32])
def test_point_grid_is_the_officials(side):
    assert np.allclose(everything.point_grid(side), amg.build_point_grid(side))


@pytest.mark.parametrize("size", [(480, 640), (1080, 1920), (512, 512)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_are_the_officials(size, layers):
    boxes, layer_of = amg.generate_crop_boxes(size, layers, 512 / 1500)
    ours = everything.crop_boxes(*size, layers, 512 / 1500)
    assert [list(box) for box, _ in ours] == boxes
    assert [layer for _, layer in ours] == layer_of


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_box_nms_keeps_what_torchvision_keeps(threshold):
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 200, (300, 2))
    sizes = rng.uniform(5, 80, (300, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=1).round()
    scores = rng.uniform(0, 1, 300)
    expected = torchvision.ops.nms(torch.as_tensor(boxes), torch.as_tensor(scores), threshold)
    assert everything.box_nms(boxes, scores, threshold).tolist() == expected.tolist()


@pytest.mark.parametrize("holes", [True, False])
def test_small_regions_are_removed_as_sam_removes_them(holes):
    rng = np.random.default_rng(7)
    for _ in range(20):
        mask = cv2.GaussianBlur(rng.uniform(0, 1, (60, 80)), (0, 0), 2.0) > 0.5
        expected, expected_changed = amg.remove_small_regions(
            mask, 30, "holes" if holes else "islands"
        )
        ours, changed = everything._without_small_regions(mask, 30, holes)
        assert changed == expected_changed and np.array_equal(ours, expected)


# --- end to end ---------------------------------------------------------------------------


def test_matches_the_official_generator_mask_for_mask(segmenters, official_model):
    """640x480, 6x6 grid, box NMS off: every mask that passes the filters, both sides."""
    image = camera_photo(640, 480)
    settings = {
        "points_per_side": 6,
        "pred_iou_thresh": 0.01,
        "stability_score_thresh": 0.2,
        "stability_score_offset": 0.05,
        "box_nms_thresh": 1.0,
    }
    official = official_masks(official_model, image, **settings)
    ours = everything.segment_everything(
        segmenters["onnxruntime"], image, EverythingSettings(**settings)
    )
    # The filters decided: some of the 108 masks went, some stayed.
    assert 0 < len(official) < 108
    assert abs(len(ours) - len(official)) <= max(1, len(official) // 20)
    official_full = [record["segmentation"] for record in official]
    ours_full = [mask.crop.to_full() for mask in ours]
    assert matched_share(official_full, ours_full) >= 0.95
    assert matched_share(ours_full, official_full) >= 0.95
    # Ids by descending predicted IoU; the scores are the official ones.
    scores = [mask.predicted_iou for mask in ours]
    assert scores == sorted(scores, reverse=True)
    official_scores = sorted((r["predicted_iou"] for r in official), reverse=True)
    assert np.allclose(scores[: len(official_scores)], official_scores[: len(scores)], atol=1e-3)


def test_matches_the_official_generator_at_full_hd_with_crops_and_small_regions(
    segmenters, official_model
):
    """1920x1080 with the defaults' NMS, one crop layer and small-region removal."""
    image = camera_photo(1920, 1080)
    settings = {
        "points_per_side": 2,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "crop_n_layers": 1,
        "min_mask_region_area": 500,
    }
    official = official_masks(official_model, image, **settings)
    ours = everything.segment_everything(
        segmenters["onnxruntime"], image, EverythingSettings(**settings)
    )
    assert official and ours
    official_full = [record["segmentation"] for record in official]
    ours_full = [mask.crop.to_full() for mask in ours]
    assert matched_share(official_full, ours_full) >= 0.95
    assert matched_share(ours_full, official_full) >= 0.95


def test_a_grid_is_decoded_in_chunks_of_the_decoder_memory_budget(random_checkpoint, cache_dir):
    from mobilesam_ros.core import Segmenter

    segmenter = Segmenter(
        random_checkpoint, "onnxruntime", cache_dir, "cpu", decoder_memory_mb=128, progress=False
    )
    calls: list[int] = []
    decode = segmenter.backend.decode

    def counting_decode(embedding, inputs, multimask):
        calls.append(len(inputs.point_coords))
        return decode(embedding, inputs, multimask)

    segmenter.backend.decode = counting_decode
    settings = EverythingSettings(points_per_side=8, points_per_batch=64, box_nms_thresh=1.0)
    everything.segment_everything(segmenter, camera_photo(320, 240), settings)
    assert sum(calls) == 64 and max(calls) == segmenter.decode_chunk_size == 3


def test_an_on_demand_everything_request_reuses_the_cached_frame(segmenters):
    """A stream's cached frame, segmented whole between stream frames: its embedding is
    reused (no second encode), ids e0, e1, ... by descending predicted IoU."""
    from mobilesam_ros.core.processing.image_codec import DecodedImage
    from mobilesam_ros.core.settings import NodeSettings
    from mobilesam_ros.core.stream import frame_sync
    from mobilesam_ros.core.stream.pipeline import StreamPipeline
    from mobilesam_ros.core.stream.requests import SegmentRequest

    segmenter = segmenters["onnxruntime"]
    settings = NodeSettings(
        everything=EverythingSettings(
            points_per_side=3, pred_iou_thresh=0.0, box_nms_thresh=1.0, stability_score_thresh=0.0
        )
    )
    pipeline = StreamPipeline(lambda payload: payload, settings, segmenter=segmenter)
    image = camera_photo(320, 240)
    pipeline.add_frame(frame_sync.Frame(5, "camera", DecodedImage(image, "rgb"), 0.0))
    encodes = []
    encode = segmenter.encode
    segmenter.encode = lambda *args, **kwargs: encodes.append(1) or encode(*args, **kwargs)
    try:
        first = pipeline.submit(SegmentRequest([], stamp_ns=5, everything=True))
        pipeline.process_next(timeout=0)
        second = pipeline.submit(SegmentRequest([], stamp_ns=5, everything=True))
        pipeline.process_next(timeout=0)
    finally:
        segmenter.encode = encode
    answers = [first.result(timeout=0), second.result(timeout=0)]
    assert len(encodes) == 1  # the second request decodes only
    ids = [instance.prompt.id for instance in answers[0].instances]
    assert ids == [f"e{i}" for i in range(27)]  # 9 points x 3 masks, nothing filtered
    scores = [instance.predicted_iou for instance in answers[0].instances]
    assert scores == sorted(scores, reverse=True)
    assert [i.predicted_iou for i in answers[1].instances] == scores


def test_everything_streams_at_max_rate_between_camera_frames(segmenters):
    """everything.max_rate 0.5 Hz with someone listening: a stream's newest frame is segmented
    whole at most every 2 s of the clock, and the camera's prompts are still answered."""
    from doubles import FakeClock

    from mobilesam_ros.core.processing.image_codec import DecodedImage
    from mobilesam_ros.core.prompts import Prompt
    from mobilesam_ros.core.settings import NodeSettings
    from mobilesam_ros.core.stream import frame_sync
    from mobilesam_ros.core.stream.pipeline import StreamPipeline

    clock = FakeClock()
    settings = NodeSettings(
        everything=EverythingSettings(
            points_per_side=2,
            max_rate=0.5,
            box_nms_thresh=1.0,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
        )
    )
    pipeline = StreamPipeline(
        lambda payload: payload,
        settings,
        segmenter=segmenters["onnxruntime"],
        everything_listening=lambda stream: True,
        clock=clock,
    )
    image = DecodedImage(camera_photo(160, 120), "rgb")
    kinds = []
    for second in range(5):
        stamp = (second + 1) * 10**9
        pipeline.add_frame(frame_sync.Frame(stamp, "camera", image, clock()))
        pipeline.add_request(
            frame_sync.PromptRequest(
                stamp, "camera", [Prompt(id="p", box=(5, 5, 60, 60))], clock(), "prompts"
            )
        )
        while (result := pipeline.process_next(timeout=0)) is not None:
            kinds.append(("everything" if result.everything else "prompts", second))
            if result.everything:
                assert [i.prompt.id for i in result.instances] == [f"e{i}" for i in range(12)]
        clock.now += 1.0
    assert [s for k, s in kinds if k == "everything"] == [0, 2, 4]
    assert [s for k, s in kinds if k == "prompts"] == [0, 1, 2, 3, 4]
