"""The `~/segment` service (mobilesam_ros/srv/Segment): prompts, and/or everything, on one image.

A call becomes an on-demand request of the stream pipeline, answered by its worker between
camera frames; the callback waits for the reply in a callback group of its own, so the node's
subscriptions go on meanwhile (the node runs a multi-threaded executor with threads for
SERVICE_CALLS_AT_ONCE waiting calls). Further calls are answered at once with success false.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from mobilesam_ros.core import InvalidInputError, MobileSamError
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.core.stream.requests import SegmentRequest
from mobilesam_ros.messages.builders import instance_mask_array
from mobilesam_ros.messages.readers import (
    decode_image_message,
    prompts_from_prompt_array,
    stamp_to_ns,
)
from mobilesam_ros.ros.conversions import ROS_TYPES
from mobilesam_ros.srv import Segment

# Calls that may wait for their reply at once; each holds an executor thread while it waits.
SERVICE_CALLS_AT_ONCE = 4
# Executor threads of the node: the waiting calls, the subscriptions, /diagnostics.
EXECUTOR_THREADS = SERVICE_CALLS_AT_ONCE + 2
_POLL_S = 0.2  # how often a waiting call looks whether the node is shutting down


class SegmentService:
    def __init__(self, node: Node, pipeline: StreamPipeline, cameras: tuple[str, ...]) -> None:
        self._node = node
        self._pipeline = pipeline
        self._cameras = cameras
        self._slots = threading.BoundedSemaphore(SERVICE_CALLS_AT_ONCE)
        self._service = node.create_service(
            Segment, "~/segment", self._on_call, callback_group=ReentrantCallbackGroup()
        )

    def destroy(self) -> None:
        self._node.destroy_service(self._service)

    def _on_call(self, request: Any, response: Any) -> Any:
        if not self._slots.acquire(blocking=False):
            return _failed(response, f"{SERVICE_CALLS_AT_ONCE} calls wait already; try again")
        try:
            return self._answer(request, response)
        finally:
            self._slots.release()

    def _answer(self, request: Any, response: Any) -> Any:
        image = request.image
        try:
            segment_request = SegmentRequest(
                prompts_from_prompt_array(request),
                image=decode_image_message(image) if len(image.data) else None,
                stream=self._stream(request.camera),
                stamp_ns=stamp_to_ns(image.header.stamp),
                everything=bool(request.everything),
            )
        except MobileSamError as exc:
            return _failed(response, f"bad request: {exc}")
        reply_future = self._pipeline.submit(segment_request)
        while not reply_future.done():
            if not self._node.context.ok():
                return _failed(response, "the node is shutting down")
            futures.wait([reply_future], timeout=_POLL_S)
        error = reply_future.exception()
        if error is not None:
            return _failed(response, str(error))
        reply = reply_future.result()
        header = image.header
        if segment_request.image is None:  # a cached frame: its own stamp and frame id
            header.stamp.sec, header.stamp.nanosec = divmod(reply.stamp_ns, 1_000_000_000)
            header.frame_id = reply.frame_id
        size = reply.image.pixels.shape[:2]
        response.masks = instance_mask_array(ROS_TYPES, header, reply.instances, size)
        response.success = True
        return response

    def _stream(self, camera: str) -> str:
        if camera and camera not in self._cameras:
            named = ", ".join(c for c in self._cameras if c) or "none (parameter cameras is empty)"
            raise InvalidInputError(f"no camera {camera!r}; cameras: {named}")
        return camera


def _failed(response: Any, message: str) -> Any:
    response.success = False
    response.message = message
    return response
