"""Message types without a ROS install: a `rosbags` type store that knows the node's messages.

The store holds ROS 2 Humble's common interfaces (rosbags ships them), the package's own
messages (`msg/*.msg`: the source checkout's folder, or the colcon install's share folder) and
the vision_msgs 4.x messages the node reads and writes (package data). Output bags embed the
definitions from this store, so tools without these packages (Foxglove, `ros2 bag`) read them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobilesam_ros.core.errors import MobileSamError
from mobilesam_ros.messages.builders import MessageTypes

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

PACKAGE = "mobilesam_ros"
_PACKAGE_DIR = Path(__file__).resolve().parents[2]
VISION_MSGS_DIR = _PACKAGE_DIR / "data" / "vision_msgs" / "msg"


def _own_message_folders() -> Iterator[Path]:
    """Where the package's .msg files may be: beside the source package, or in an install
    prefix's share folder (colcon installs them there; a prefix is on AMENT_PREFIX_PATH)."""
    yield _PACKAGE_DIR.parent / "msg"
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    # <prefix>/lib/pythonX.Y/site-packages/mobilesam_ros: the prefix is four levels up.
    if len(_PACKAGE_DIR.parents) > 3:
        prefixes.append(str(_PACKAGE_DIR.parents[3]))
    for prefix in prefixes:
        yield Path(prefix) / "share" / PACKAGE / "msg"


def own_message_folder() -> Path:
    folders = list(_own_message_folders())
    for folder in folders:
        if (folder / "InstanceMaskArray.msg").is_file():
            return folder
    raise MobileSamError(
        "cannot find the package's message definitions (InstanceMaskArray.msg); looked in "
        + ", ".join(str(f) for f in folders)
        + ": run from the source checkout or a colcon install"
    )


def _definitions(folder: Path, package: str) -> dict[str, Any]:
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(
            get_types_from_msg(path.read_text(encoding="utf-8"), f"{package}/msg/{path.stem}")
        )
    return types


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Humble's common interfaces, vision_msgs and the package's messages (built once)."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = _definitions(VISION_MSGS_DIR, "vision_msgs")
    types.update(_definitions(own_message_folder(), PACKAGE))
    store.register(types)
    return store


class MessageFactory:
    """Makes messages of one rosbags type with every field not given at its default (zero,
    empty, or a default nested message), as rclpy's message classes do; class constants
    (e.g. `Marker.CUBE`) read through."""

    def __init__(self, store: Typestore, typename: str) -> None:
        self._store = store
        self.message_class = store.types[typename]
        self.typename = typename

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message_class, name)

    def __call__(self, **values: Any) -> Any:
        _, field_defs = self._store.fielddefs[self.typename]
        for name, (kind, detail) in field_defs:
            if name not in values:
                values[name] = _default(self._store, kind, detail)
        return self.message_class(**values)


def _default(store: Typestore, kind: Any, detail: Any) -> Any:
    """A field's default by its rosbags node type: BASE, NAME, ARRAY or SEQUENCE."""
    from rosbags.typesys.base import Nodetype

    if kind == Nodetype.BASE:
        return "" if detail[0] == "string" else (False if detail[0] == "bool" else 0)
    if kind == Nodetype.NAME:
        return MessageFactory(store, detail)()
    element_kind, element_detail = detail[0]
    length = detail[1]
    if element_kind == Nodetype.BASE and element_detail[0] not in ("string", "bool"):
        # rosbags holds numeric arrays and sequences as numpy arrays.
        return np.zeros(length if kind == Nodetype.ARRAY else 0, _NUMPY[element_detail[0]])
    if kind == Nodetype.ARRAY:
        return [_default(store, element_kind, element_detail) for _ in range(length)]
    return []


_NUMPY = {
    "byte": np.uint8,
    "char": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


def _byte_view(array: np.ndarray) -> np.ndarray:
    """A uint8[] field's value for rosbags: the array's bytes as a flat uint8 view, no copy."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


# MessageTypes field -> ROS 2 type name.
TYPE_NAMES = {
    "image": "sensor_msgs/msg/Image",
    "region_of_interest": "sensor_msgs/msg/RegionOfInterest",
    "instance_mask": f"{PACKAGE}/msg/InstanceMask",
    "instance_mask_array": f"{PACKAGE}/msg/InstanceMaskArray",
    "point_cloud2": "sensor_msgs/msg/PointCloud2",
    "point_field": "sensor_msgs/msg/PointField",
    "pose": "geometry_msgs/msg/Pose",
    "point": "geometry_msgs/msg/Point",
    "quaternion": "geometry_msgs/msg/Quaternion",
    "vector3": "geometry_msgs/msg/Vector3",
    "color_rgba": "std_msgs/msg/ColorRGBA",
    "marker": "visualization_msgs/msg/Marker",
    "marker_array": "visualization_msgs/msg/MarkerArray",
    "detection_2d_array": "vision_msgs/msg/Detection2DArray",
    "detection_2d": "vision_msgs/msg/Detection2D",
    "hypothesis_with_pose": "vision_msgs/msg/ObjectHypothesisWithPose",
    "detection_3d_array": "vision_msgs/msg/Detection3DArray",
    "detection_3d": "vision_msgs/msg/Detection3D",
    "object_hypothesis": "vision_msgs/msg/ObjectHypothesis",
}


@lru_cache(maxsize=1)
def bag_message_types() -> MessageTypes:
    """The builders' message classes as rosbags types (see `MessageFactory`)."""
    store = typestore()
    classes = {name: MessageFactory(store, type_name) for name, type_name in TYPE_NAMES.items()}
    return MessageTypes(byte_data=_byte_view, **classes)
