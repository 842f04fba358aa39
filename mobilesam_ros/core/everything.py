"""Segment everything: SAM's automatic mask generator (`SamAutomaticMaskGenerator`), with numpy
and OpenCV instead of PyTorch.

The same steps, parameters and defaults: a grid of single-point prompts over the image (and
over each crop of `crop_n_layers` layers), three masks per point, masks dropped by predicted
IoU, then by stability score, masks touching a crop's inner edge dropped, duplicates removed by
box NMS (within a crop by predicted IoU, across crops in favour of the smaller crop), small
regions and holes removed on request. Two differences that change no result: the predicted-IoU
filter runs before the masks are upscaled (only survivors are upscaled, one at a time, so
memory stays at one full-size logit map), and masks are kept as tight crops.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import cv2
import numpy as np

from mobilesam_ros.core.processing.postprocess import MaskCrop, upscale_logits
from mobilesam_ros.core.processing.preprocess import FrameGeometry
from mobilesam_ros.core.prompts import Prompt, PromptMask
from mobilesam_ros.core.segmenter import ImageEmbedding, Segmenter
from mobilesam_ros.core.settings import EverythingSettings

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (a mask's box: x1, y1 inclusive)
_NO_PIXELS = np.zeros((0, 0), bool)  # a candidate's crop until its packed pixels are unpacked
# Distance in pixels within which a mask's box "touches" a crop's edge, as in SAM.
_CROP_EDGE_TOLERANCE = 20.0


@dataclass(frozen=True)
class EverythingMask:
    """One mask of `segment_everything`, in the whole image's pixels."""

    crop: MaskCrop
    box: Box
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]  # the grid point that prompted it
    crop_box: Box  # the image crop it was found in (x1, y1 exclusive)

    @property
    def area(self) -> int:
        return int(self.crop.mask.sum())


def point_grid(points_per_side: int) -> np.ndarray:
    """(n*n, 2) points evenly spaced in [0, 1]^2, cell centres, x varying fastest."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    return np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 2)


def crop_boxes(height: int, width: int, layers: int, overlap_ratio: float) -> list[tuple[Box, int]]:
    """(crop box, layer) for the whole image and each layer's (2^i)^2 overlapping crops."""
    boxes = [((0, 0, width, height), 0)]
    short_side = min(height, width)
    for layer in range(1, layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(starts_x, starts_y):
            boxes.append(((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer))
    return boxes


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first (torchvision's `nms`: box areas
    (x1 - x0) * (y1 - y0), a box dropped when its IoU with a kept one exceeds the threshold)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order.size:
        best, order = order[0], order[1:]
        kept.append(int(best))
        x0 = np.maximum(boxes[best, 0], boxes[order, 0])
        y0 = np.maximum(boxes[best, 1], boxes[order, 1])
        x1 = np.minimum(boxes[best, 2], boxes[order, 2])
        y1 = np.minimum(boxes[best, 3], boxes[order, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = areas[best] + areas[order] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = order[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def segment_everything(
    segmenter: Segmenter,
    image: np.ndarray,
    settings: EverythingSettings | None = None,
    channel_order: str = "rgb",
    embedding: ImageEmbedding | None = None,
) -> list[EverythingMask]:
    """Every mask SAM's automatic mask generator finds in `image`, by descending predicted IoU.

    embedding: the image's own, when already encoded (a cached frame): the whole-image crop
    then costs the decoder only.
    """
    settings = settings or EverythingSettings()
    height, width = image.shape[:2]
    found: list[EverythingMask] = []
    crops = crop_boxes(height, width, settings.crop_n_layers, settings.crop_overlap_ratio)
    for crop_box, layer in crops:
        whole = embedding if layer == 0 else None
        found += _segment_crop(segmenter, image, channel_order, crop_box, layer, settings, whole)
    if len(crops) > 1:  # duplicates across crops: the mask of the smaller crop wins
        crop_areas = [
            (m.crop_box[2] - m.crop_box[0]) * (m.crop_box[3] - m.crop_box[1]) for m in found
        ]
        keep = box_nms(_boxes(found), 1.0 / np.asarray(crop_areas, float), settings.crop_nms_thresh)
        found = [found[i] for i in keep]
    if settings.min_mask_region_area > 0:
        found = _remove_small_regions(
            found,
            (height, width),
            settings.min_mask_region_area,
            max(settings.box_nms_thresh, settings.crop_nms_thresh),
        )
    return sorted(found, key=lambda m: -m.predicted_iou)


def _segment_crop(
    segmenter: Segmenter,
    image: np.ndarray,
    channel_order: str,
    crop_box: Box,
    layer: int,
    settings: EverythingSettings,
    embedding: ImageEmbedding | None,
) -> list[EverythingMask]:
    x0, y0, x1, y1 = crop_box
    if embedding is None:
        embedding = segmenter.encode(image[y0:y1, x0:x1], channel_order)
    geometry = FrameGeometry.for_image(y1 - y0, x1 - x0)
    points_per_side = max(1, settings.points_per_side // 2**layer)
    points = point_grid(points_per_side) * np.array([x1 - x0, y1 - y0], np.float64)
    image_box = (0, 0, image.shape[1], image.shape[0])
    image_size = (image.shape[0], image.shape[1])
    # Candidates until NMS, their masks bit-packed: a grid's thousands of masks would otherwise
    # hold a byte per pixel each (a 32x32 grid of frame-filling masks: about 1 GB at 640x480).
    candidates: list[tuple[EverythingMask, tuple[int, int], np.ndarray]] = []
    for start in range(0, len(points), settings.points_per_batch):
        batch = points[start : start + settings.points_per_batch]
        logits, ious = segmenter.decode_logits(embedding, batch[:, None, :])
        for index, outputs in enumerate(zip(logits, ious, strict=True)):
            for mask_logits, iou in zip(*outputs, strict=True):
                if settings.pred_iou_thresh > 0 and not iou > settings.pred_iou_thresh:
                    continue
                found = _mask_of(
                    mask_logits, float(iou), geometry, segmenter.mask_threshold, settings
                )
                if found is None:
                    continue
                crop, score = found
                if _near_crop_edge(crop.box, crop_box, image_box):
                    continue
                point = (float(batch[index, 0] + x0), float(batch[index, 1] + y0))
                # The crop's place and size, its pixels packed beside it.
                placed = MaskCrop(crop.x0 + x0, crop.y0 + y0, _NO_PIXELS, image_size)
                candidate = EverythingMask(
                    placed, _shifted(crop.box, x0, y0), float(iou), score, point, crop_box
                )
                candidates.append((candidate, crop.mask.shape, np.packbits(crop.mask)))
    found = [candidate for candidate, _, _ in candidates]
    keep = box_nms(_boxes(found), [m.predicted_iou for m in found], settings.box_nms_thresh)
    return [_unpacked(*candidates[i]) for i in keep]


def _shifted(box: Box | None, dx: int, dy: int) -> Box:
    assert box is not None  # a mask that passed the filters is not empty
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _unpacked(
    candidate: EverythingMask, shape: tuple[int, int], bits: np.ndarray
) -> EverythingMask:
    crop = candidate.crop
    height, width = shape
    mask = np.unpackbits(bits, count=height * width).reshape(height, width).view(bool)
    return dataclasses.replace(candidate, crop=MaskCrop(crop.x0, crop.y0, mask, crop.image_size))


def everything_prompt_masks(masks: Sequence[EverythingMask]) -> list[PromptMask]:
    """As the node's instances: ids e0, e1, ... in order (descending predicted IoU), each with
    the grid point that prompted it."""
    return [
        PromptMask(
            Prompt(id=f"e{index}", points=(mask.point,), point_labels=(1,)),
            mask.crop,
            mask.predicted_iou,
            None,
        )
        for index, mask in enumerate(masks)
    ]


def _mask_of(
    logits: np.ndarray,
    predicted_iou: float,
    geometry: FrameGeometry,
    threshold: float,
    settings: EverythingSettings,
) -> tuple[MaskCrop, float] | None:
    """The mask of one low-res logit map and its stability score, or None when unstable."""
    upscaled = upscale_logits(logits, geometry)
    offset = settings.stability_score_offset
    union = np.count_nonzero(upscaled > threshold - offset)
    intersection = np.count_nonzero(upscaled > threshold + offset)
    score = intersection / union if union else math.nan
    if settings.stability_score_thresh > 0 and not score >= settings.stability_score_thresh:
        return None
    crop = MaskCrop.from_mask(upscaled > threshold)
    if crop.empty:
        return None
    # A copy of the crop alone: a view would keep the whole upscaled mask alive.
    return MaskCrop(crop.x0, crop.y0, crop.mask.copy(), crop.image_size), float(score)


def _near_crop_edge(box: Box | None, crop_box: Box, image_box: Box) -> bool:
    """A mask touching an edge of its crop that is not an edge of the image (SAM drops them:
    the object likely goes on outside the crop)."""
    if box is None:
        return False
    x0, y0 = crop_box[:2]
    shifted = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
    for value, crop_edge, image_edge in zip(shifted, crop_box, image_box, strict=True):
        near_crop = abs(value - crop_edge) <= _CROP_EDGE_TOLERANCE
        near_image = abs(value - image_edge) <= _CROP_EDGE_TOLERANCE
        if near_crop and not near_image:
            return True
    return False


def _boxes(masks: Sequence[EverythingMask]) -> np.ndarray:
    return np.asarray([m.box for m in masks], np.float64).reshape(-1, 4)


def _remove_small_regions(
    masks: list[EverythingMask], size: tuple[int, int], min_area: int, nms_threshold: float
) -> list[EverythingMask]:
    """Holes, then islands, smaller than `min_area` removed (the largest island always stays);
    duplicates removed again by box NMS, in favour of masks that needed no change."""
    changed_masks: list[EverythingMask] = []
    unchanged: list[float] = []
    for found in masks:
        mask = found.crop.to_full()
        mask, holes = _without_small_regions(mask, min_area, holes=True)
        mask, islands = _without_small_regions(mask, min_area, holes=False)
        crop = MaskCrop.from_mask(mask, image_size=size)
        box = crop.box or (0, 0, 0, 0)
        unchanged.append(0.0 if holes or islands else 1.0)
        changed_masks.append(
            EverythingMask(
                crop, box, found.predicted_iou, found.stability_score, found.point, found.crop_box
            )
        )
    keep = box_nms(_boxes(changed_masks), unchanged, nms_threshold)
    return [changed_masks[i] for i in keep]


def _without_small_regions(mask: np.ndarray, min_area: int, holes: bool) -> tuple[np.ndarray, bool]:
    """SAM's `remove_small_regions`: 8-connected regions of the mask (or of its complement,
    for holes) below `min_area` pixels removed (holes filled); whether anything changed."""
    working = (mask ^ holes).astype(np.uint8)
    count, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [label + 1 for label, area in enumerate(sizes) if area < min_area]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [label for label in range(count) if label not in fill]
        if not fill:  # every island is small: the largest stays
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
