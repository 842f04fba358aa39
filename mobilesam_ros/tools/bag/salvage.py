"""Reading a recording record by record, up to any damage: bare .mcap files, and what a
damaged recording still holds.

A recorder that is killed (or a disk that fills up) leaves an MCAP file without its summary and
footer, or an sqlite3 file cut short; `rosbags` refuses both. Here MCAP records are read in file
order (schemas, channels, messages, chunks) until one is incomplete, and sqlite3 rows in insert
order until the database reports damage. Message types come from the recording's own definitions
where it has them, else from the default store.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from mobilesam_ros.core.errors import InvalidInputError

_log = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK = 0x03, 0x04, 0x05, 0x06
_FOOTER, _DATA_END = 0x02, 0x0F  # the data section's end: the summary and the end magic follow
SALVAGED_MESSAGE = tuple[str, str, int, bytes]  # topic, type, log time (ns), CDR bytes


class DamagedRecordError(Exception):
    """A record cut short or unreadable: the end of what can be read."""


def _read(bio: BinaryIO, size: int) -> bytes:
    data = bio.read(size)
    if len(data) != size:
        raise DamagedRecordError(f"record cut short ({len(data)} of {size} bytes)")
    return data


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _string(bio: BinaryIO) -> str:
    return _read(bio, _uint(_read(bio, 4))).decode()


class SalvagedRecording:
    """topics (name -> type), store (the type store), messages(topics)."""

    def __init__(self, files: list[Path], default_store: Any) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="mobilesam-salvage-")
        self._files = [_sqlite_readable(p, Path(self._scratch.name)) for p in files]
        self.definitions: dict[str, tuple[str, str]] = {}  # type -> (encoding, text)
        self.topics: dict[str, str] = {}
        self.damage: str | None = None  # the first damage found
        for path in self._files:  # a first pass for the topics and definitions only
            for _ in self._records(path, want_messages=False):
                pass
        self.store = _store(default_store, self.definitions)

    def messages(self, topics: set[str]) -> Iterator[SALVAGED_MESSAGE]:
        for path in self._files:
            for message in self._records(path, want_messages=True):
                if message[0] in topics:
                    yield message

    def _records(self, path: Path, want_messages: bool) -> Iterator[SALVAGED_MESSAGE]:
        reader = _mcap_records if path.suffix == ".mcap" else _sqlite_rows
        try:
            yield from reader(path, self, want_messages)
        except (DamagedRecordError, sqlite3.DatabaseError, ValueError) as exc:
            self.damage = self.damage or f"{path.name}: {exc}"
            if want_messages:
                _log.warning("%s: read up to the damage (%s)", path, exc)


def _mcap_records(
    path: Path, recording: SalvagedRecording, want_messages: bool
) -> Iterator[SALVAGED_MESSAGE]:
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}  # id -> (topic, type)
    with path.open("rb") as file:
        if file.read(8) != MCAP_MAGIC:
            raise InvalidInputError(f"{path} is not an MCAP file")
        yield from _mcap_stream(file, schemas, channels, recording, want_messages)


def _mcap_stream(
    bio: BinaryIO,
    schemas: dict[int, str],
    channels: dict[int, tuple[str, str]],
    recording: SalvagedRecording,
    want_messages: bool,
) -> Iterator[SALVAGED_MESSAGE]:
    while (opcode := bio.read(1)) and opcode[0] not in (_FOOTER, _DATA_END):
        body = BytesIO(_read(bio, _uint(_read(bio, 8))))
        if opcode[0] == _SCHEMA:
            schema_id = _uint(_read(body, 2))
            name, encoding = _string(body), _string(body)
            text = _read(body, _uint(_read(body, 4))).decode()
            schemas[schema_id] = name
            recording.definitions.setdefault(name, (encoding, text))
        elif opcode[0] == _CHANNEL:
            channel_id, schema_id = _uint(_read(body, 2)), _uint(_read(body, 2))
            topic = _string(body)
            channels[channel_id] = (topic, schemas.get(schema_id, ""))
            recording.topics.setdefault(topic, schemas.get(schema_id, ""))
        elif opcode[0] == _MESSAGE and want_messages:
            header = _read(body, 22)
            topic, msgtype = channels.get(_uint(header[:2]), ("", ""))
            if topic:
                yield topic, msgtype, _uint(header[6:14]), body.read()
        elif opcode[0] == _CHUNK:
            yield from sorted(
                _chunk(body, schemas, channels, recording, want_messages), key=lambda m: m[2]
            )


def _chunk(
    body: BinaryIO,
    schemas: dict[int, str],
    channels: dict[int, tuple[str, str]],
    recording: SalvagedRecording,
    want_messages: bool,
) -> list[SALVAGED_MESSAGE]:
    from rosbags.rosbag2.storage_mcap import decompress

    header = _read(body, 28)
    uncompressed_size, crc = _uint(header[16:24]), _uint(header[24:28])
    compression = _string(body)
    data = _read(body, _uint(_read(body, 8)))
    try:
        raw = decompress(data, compression, uncompressed_size, crc)
    except Exception as exc:
        raise DamagedRecordError(f"a chunk does not decompress: {exc}") from exc
    return list(_mcap_stream(BytesIO(raw), schemas, channels, recording, want_messages))


def _sqlite_readable(path: Path, scratch: Path) -> Path:
    """`path`, or for an sqlite3 file cut short a copy padded to the size its header records:
    sqlite refuses a file shorter than that, and reads the pages before the cut from the copy."""
    if path.suffix != ".db3":
        return path
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise InvalidInputError(f"{path} is not an sqlite3 file")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    recorded = int.from_bytes(header[28:32], "big") * page_size
    size = path.stat().st_size
    if size >= recorded:
        return path
    copy = scratch / path.name
    shutil.copyfile(path, copy)
    with copy.open("r+b") as file:
        file.truncate(recorded)  # zero-filled
    return copy


def _sqlite_rows(
    path: Path, recording: SalvagedRecording, want_messages: bool
) -> Iterator[SALVAGED_MESSAGE]:
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        topics = {
            topic_id: (name, kind)
            for topic_id, name, kind in database.execute("SELECT id, name, type FROM topics")
        }
        for name, kind in topics.values():
            recording.topics.setdefault(name, kind)
        tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master")}
        if "message_definitions" in tables:  # rosbag2 since Iron
            for kind, encoding, text in database.execute(
                "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions"
            ):
                if text:
                    recording.definitions.setdefault(kind, (encoding, text))
        if not want_messages:
            return
        # Insert order (rowid) reads the pages front to back: rows before the damage come back.
        cursor = database.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY rowid")
        for topic_id, log_time, data in cursor:
            name, kind = topics[topic_id]
            yield name, kind, int(log_time), bytes(data)
    finally:
        database.close()


def _store(default_store: Any, definitions: dict[str, tuple[str, str]]) -> Any:
    """The default store's types, replaced by the recording's own definitions."""
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    types = dict(default_store.fielddefs)
    for name, (encoding, text) in definitions.items():
        if encoding == "ros2msg":
            types.update(get_types_from_msg(text, name))
        elif encoding == "ros2idl":
            types.update(get_types_from_idl(text))
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


def open_recording(path: Path, default_store: Any) -> SalvagedRecording:
    """A damaged recording (a rosbag2 folder, or one .mcap or .db3 file) read up to the damage."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    else:
        files = [path] if path.suffix in (".mcap", ".db3") else []
    if not files:
        raise InvalidInputError(f"{path} holds no .mcap or .db3 file")
    return SalvagedRecording(files, default_store)
