"""COCO instance annotations of the answered frames: RLE masks (pycocotools), one image entry
per frame (file name from its stamp, written there with --coco-images), categories from the
detections' class ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mobilesam_ros.core.errors import BackendUnavailableError
from mobilesam_ros.core.files import write_bytes_atomically
from mobilesam_ros.core.stream.stream import FrameResult

UNLABELLED = "object"  # the category of prompts without a class (clicks, prompts)


class CocoWriter:
    def __init__(self, path: Path, images_dir: Path | None = None, resume: bool = False) -> None:
        try:
            from pycocotools import mask as coco_mask
        except ImportError:
            raise BackendUnavailableError(
                "--coco needs pycocotools: pip install pycocotools"
            ) from None
        self._encode = coco_mask.encode
        self.path = Path(path)
        self._images_dir = images_dir
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._categories: dict[str, int] = {}
        if resume and self.path.is_file():
            self._load()

    def _load(self) -> None:
        data = json.loads(self.path.read_text(encoding="utf-8"))
        self._images, self._annotations = data["images"], data["annotations"]
        self._categories = {c["name"]: c["id"] for c in data["categories"]}

    def add(self, result: FrameResult) -> None:
        """One frame and its instances (everything results: masks without a class)."""
        height, width = result.decoded.pixels.shape[:2]
        frame = result.frame
        image_id = len(self._images) + 1
        file_name = f"{frame.stamp_ns}.jpg"
        self._images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": width,
                "height": height,
                "stamp_ns": frame.stamp_ns,
                "frame_id": frame.frame_id,
            }
        )
        if self._images_dir is not None:
            import cv2

            self._images_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(self._images_dir / file_name), result.decoded.to_bgr())
        full = np.zeros((height, width), np.uint8, order="F")
        for instance in result.instances:
            crop = instance.crop
            if crop.empty:
                continue
            full[:] = 0
            full[crop.slices] = crop.mask
            x0, y0, x1, y1 = crop.box
            rle = self._encode(full)
            rle["counts"] = rle["counts"].decode("ascii")
            self._annotations.append(
                {
                    "id": len(self._annotations) + 1,
                    "image_id": image_id,
                    "category_id": self._category(instance.prompt.class_id),
                    "segmentation": rle,
                    "area": int(crop.mask.sum()),
                    "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                    "iscrowd": 0,
                    "score": float(instance.predicted_iou),
                    "instance_id": instance.track_id or instance.prompt.id,
                }
            )

    def _category(self, class_id: str) -> int:
        """A class id that is a number keeps it; a name gets the next free id."""
        name = class_id or UNLABELLED
        if name not in self._categories:
            used = set(self._categories.values())
            number = int(name) if name.isdigit() else None
            if number is None or number in used:
                number = max(used, default=0) + 1
            self._categories[name] = number
        return self._categories[name]

    def save(self) -> None:
        categories = [
            {"id": i, "name": n} for n, i in sorted(self._categories.items(), key=lambda c: c[1])
        ]
        document = {
            "images": self._images,
            "annotations": self._annotations,
            "categories": categories,
        }
        write_bytes_atomically(self.path, json.dumps(document).encode())
