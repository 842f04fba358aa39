"""Reading a recording: rosbag2 folders (sqlite3 or MCAP) and bare .mcap files, with `rosbags`.

A recording that `rosbags` refuses because it is damaged (a recorder killed mid-write: an
MCAP file without its footer, an sqlite3 file cut short) is read record by record up to the
damage (`salvage.py`), and `InputBag.damage` says what was wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.tools.bag import salvage
from mobilesam_ros.tools.bag.schemas import typestore

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    log_time_ns: int  # when the recorder received it
    message: Any  # the deserialized message (a rosbags dataclass)


class InputBag:
    """One recording: its topics (name -> type) and its messages in log-time order."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InvalidInputError(f"no recording at {self.path}")
        self._damage: str | None = None
        self._reader: Any = None
        self._salvaged: salvage.SalvagedRecording | None = None
        if self.path.is_file():  # a bare .mcap (no rosbag2 metadata): read record by record
            self._open_records()
            return
        try:
            self._open_intact()
        except Exception as exc:  # rosbags' errors have no common base worth naming here
            self._damage = str(exc) or type(exc).__name__
            _log.warning(
                "%s is damaged (%s): reading its messages up to the damage", self.path, self._damage
            )
            self._open_records()

    @property
    def damage(self) -> str | None:
        """What was found wrong with the recording, if anything."""
        return self._damage or (self._salvaged.damage if self._salvaged else None)

    def _open_records(self) -> None:
        self._salvaged = salvage.open_recording(self.path, typestore())
        self.topics = self._salvaged.topics
        self.store = self._salvaged.store

    def _open_intact(self) -> None:
        from rosbags.highlevel import AnyReader

        reader = AnyReader([self.path], default_typestore=typestore())
        reader.open()
        self._reader = reader
        self.store = reader.typestore
        self.topics = {c.topic: c.msgtype for c in self._reader.connections}
        self._counts = {c.topic: c.msgcount for c in self._reader.connections}

    def message_count(self, topics: Collection[str]) -> int | None:
        """Messages on `topics` (None when unknown: a damaged recording)."""
        if self._reader is None:
            return None
        return sum(self._counts.get(topic, 0) for topic in topics)

    def check_topics(self, wanted: dict[str, str | None]) -> None:
        """wanted: option -> topic (None: not asked for). An unknown topic is an error that
        lists what the recording holds."""
        for option, topic in wanted.items():
            if topic is not None and topic not in self.topics:
                held = "\n".join(f"  {name} ({kind})" for name, kind in sorted(self.topics.items()))
                raise InvalidInputError(
                    f"{option} {topic}: no such topic in {self.path}; it holds:\n{held}"
                )

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        """The messages of `topics` in log-time order, deserialized. A damaged part ends the
        iteration with a warning (`damage` says why)."""
        deserialize = self.store.deserialize_cdr
        if self._salvaged is not None:
            for topic, msgtype, log_time, raw in self._salvaged.messages(set(topics)):
                yield BagMessage(topic, log_time, deserialize(raw, msgtype))
            return
        connections = [c for c in self._reader.connections if c.topic in topics]
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, log_time, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                self._damage = str(exc) or type(exc).__name__
                _log.warning("%s: stopped at damaged data (%s)", self.path, self._damage)
                return
            yield BagMessage(connection.topic, log_time, deserialize(raw, connection.msgtype))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
