"""The node's outputs of one answered frame, as messages for the output recording.

The same builders as the node's publishers (`mobilesam_ros.messages`), with rosbags' message
classes; every message carries the input image's header. Topics are the node's output names
under a namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mobilesam_ros.core.depth import CameraModel, DepthImage
from mobilesam_ros.core.stream.result_images import (
    label_encoding,
    label_image,
    lift_result,
    overlay_image,
    refined_detections_wanted,
)
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.messages import builders
from mobilesam_ros.tools.bag.schemas import TYPE_NAMES, bag_message_types

IMAGE_TYPE = TYPE_NAMES["image"]
# Output name -> type; everything/ outputs come from --everything, 3D ones from --depth-topic.
OUTPUT_TYPES = {
    "masks": TYPE_NAMES["instance_mask_array"],
    "mask_image": IMAGE_TYPE,
    "overlay": IMAGE_TYPE,
    "detections_refined": TYPE_NAMES["detection_2d_array"],
    "detections_3d": TYPE_NAMES["detection_3d_array"],
    "instances_cloud": TYPE_NAMES["point_cloud2"],
    "everything/masks": TYPE_NAMES["instance_mask_array"],
    "everything/mask_image": IMAGE_TYPE,
    "everything/overlay": IMAGE_TYPE,
}


@dataclass(frozen=True)
class OutputChoice:
    namespace: str = "/mobilesam"
    overlay: bool = False
    depth: bool = False  # detections_3d and instances_cloud
    everything: bool = False

    def names(self) -> list[str]:
        """The outputs written, in OUTPUT_TYPES' order."""
        left_out = set()
        if not self.overlay:
            left_out |= {"overlay", "everything/overlay"}
        if not self.depth:
            left_out |= {"detections_3d", "instances_cloud"}
        if not self.everything:
            left_out |= {n for n in OUTPUT_TYPES if n.startswith("everything/")}
        return [name for name in OUTPUT_TYPES if name not in left_out]

    def topic(self, name: str) -> str:
        return f"{self.namespace.rstrip('/')}/{name}"


def frame_messages(
    result: FrameResult,
    choice: OutputChoice,
    depth: DepthImage | None = None,
    camera: CameraModel | None = None,
    lifted_counts: dict[str, int] | None = None,
) -> Iterator[tuple[str, Any]]:
    """(output name, message) of every output `choice` holds for `result`; lifted_counts
    collects the reasons instances have no 3D result."""
    types = bag_message_types()
    header = result.frame.payload.header
    prefix = "everything/" if result.everything else ""
    yield (
        prefix + "masks",
        builders.instance_mask_array(
            types, header, result.instances, result.decoded.pixels.shape[:2]
        ),
    )
    labels = label_image(result)
    yield (
        prefix + "mask_image",
        builders.image_message(types, header, labels, label_encoding(labels)),
    )
    if choice.overlay:
        overlay = overlay_image(result, labels)
        yield prefix + "overlay", builders.image_message(types, header, overlay, "bgr8")
    if result.everything:
        return
    if refined_detections_wanted(result):
        yield "detections_refined", builders.refined_detections(types, header, result.instances)
    if not choice.depth or depth is None or camera is None:
        return
    settings = result.settings.depth
    lifted = lift_result(result, depth, camera)
    if lifted_counts is not None:
        for reason, count in lifted.counts.items():
            lifted_counts[reason] = lifted_counts.get(reason, 0) + count
    yield (
        "detections_3d",
        builders.detections_3d(
            types, header, result.instances, lifted.instances, settings.oriented_boxes
        ),
    )
    rgb = result.decoded.to_bgr()[..., ::-1] if settings.cloud_rgb else None
    yield (
        "instances_cloud",
        builders.instances_cloud_message(
            types, header, lifted.instances, settings.cloud_stride, rgb
        ),
    )
