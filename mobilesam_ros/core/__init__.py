"""ROS-free MobileSAM inference: model, export, backends, pre- and post-processing.

Nothing here imports ROS; PyTorch is imported only by the torch backend and the exporter.
"""

from mobilesam_ros.core.errors import (
    BackendUnavailableError,
    CheckpointError,
    DownloadError,
    InvalidInputError,
    MobileSamError,
)
from mobilesam_ros.core.model.checkpoint import (
    OFFICIAL_CHECKPOINT,
    default_cache_dir,
    resolve_checkpoint,
)
from mobilesam_ros.core.segmenter import ImageEmbedding, SegmentationResult, Segmenter, StageTimings

__all__ = [
    "OFFICIAL_CHECKPOINT",
    "BackendUnavailableError",
    "CheckpointError",
    "DownloadError",
    "ImageEmbedding",
    "InvalidInputError",
    "MobileSamError",
    "SegmentationResult",
    "Segmenter",
    "StageTimings",
    "default_cache_dir",
    "resolve_checkpoint",
]
