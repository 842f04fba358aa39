"""The output recording: one MCAP rosbag2 folder, message definitions embedded, resumable.

Every run closes the recording properly, also when stopped (Ctrl-C), and records in the
metadata's custom data how far it came (`Progress`). A resumed run writes a new recording that
starts with the old one's messages (copied as bytes, not decoded) and replaces the old one only
once it is closed, so an interrupted resume still leaves the earlier, valid recording in place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.tools.bag.schemas import typestore

PROGRESS_KEY = "mobilesam_ros.progress"


@dataclass(frozen=True)
class Progress:
    """How far a run came; kept in the output's metadata (custom_data)."""

    complete: bool
    frames_done: int  # input images handed to the pipeline
    resume_log_time_ns: int  # input messages before this log time are done
    options: dict[str, Any]  # what the run was asked to do; a resume must ask the same
    parts: int = 1  # runs that wrote it (a resume adds one)


def read_progress(path: Path) -> Progress | None:
    """The progress recorded in an output recording's metadata, or None."""
    from ruamel.yaml import YAML

    metadata = Path(path) / "metadata.yaml"
    if not metadata.is_file():
        return None
    info = YAML(typ="safe").load(metadata.read_text(encoding="utf-8"))
    custom = info.get("rosbag2_bagfile_information", {}).get("custom_data") or {}
    if PROGRESS_KEY not in custom:
        return None
    return Progress(**json.loads(custom[PROGRESS_KEY]))


class OutputBag:
    """Writes messages by topic; `close(progress)` finishes the recording."""

    def __init__(self, path: Path, topics: dict[str, str], resume: bool = False) -> None:
        """topics: topic -> ROS 2 type name. resume: copy the recording at `path` first."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        self._target = self.path
        if resume:
            self.path = self.path.with_name(self.path.name + ".resuming")
            shutil.rmtree(self.path, ignore_errors=True)  # a resume that was itself stopped
        elif self.path.exists():
            raise InvalidInputError(
                f"{self.path} exists: give --resume to continue it, or another --output"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._store = typestore()
        self._connections = {
            topic: self._writer.add_connection(topic, kind, typestore=self._store)
            for topic, kind in topics.items()
        }
        self._types = topics
        self.written = 0
        if resume:
            self._copy(self._target)

    def _copy(self, source: Path) -> None:
        from rosbags.rosbag2 import Reader

        with Reader(source) as reader:
            for connection, log_time, raw in reader.messages():
                if connection.topic in self._connections:
                    self._writer.write(self._connections[connection.topic], log_time, raw)
                    self.written += 1

    def write(self, topic: str, log_time_ns: int, message: Any) -> None:
        raw = self._store.serialize_cdr(message, self._types[topic])
        self._writer.write(self._connections[topic], log_time_ns, raw)
        self.written += 1

    def close(self, progress: Progress) -> Path:
        """Finish the recording with `progress` in its metadata; returns its folder."""
        self._writer.set_custom_data(PROGRESS_KEY, json.dumps(asdict(progress)))
        self._writer.close()
        if self.path != self._target:  # a resume: the new recording replaces the old one
            old = self._target.with_name(self._target.name + ".replaced")
            self._target.rename(old)
            self.path.rename(self._target)
            shutil.rmtree(old)
            self.path = self._target
        return self.path
