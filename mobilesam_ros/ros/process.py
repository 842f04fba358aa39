"""Running a segmentation node as a process: exit codes, and logging routed to the ROS logger."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException

from mobilesam_ros.core import MobileSamError


class RosLogHandler(logging.Handler):
    """Routes the package's `logging` records (progress, warnings) to the node's ROS logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.levelno >= logging.ERROR:
            self._ros_logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._ros_logger.warning(message)
        else:
            self._ros_logger.info(message)


def run(
    make_node: Callable[[], Any],
    runtime_of: Callable[[Any], Any],
    args: list[str] | None = None,
) -> int:
    """Spin a node until shutdown; exit codes: 0 clean, 2 bad parameter or model, 1 a defect."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MobileSamError as exc:
        print(
            f"[{node.get_name() if node else 'mobilesam'}] error: {exc}",
            file=sys.stderr,
            flush=True,
        )
        code = 2
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        finished = True
        if node is not None:
            runtime = runtime_of(node)
            if runtime is not None:
                finished = runtime.stop()
                runtime.close()
                if runtime.loading_error:
                    code = 2
            node.destroy_node()
        rclpy.try_shutdown()
    if not finished:
        # An inference is still running in native code; it cannot be interrupted and holds no
        # state worth saving, so leave without waiting for it (with the real exit code).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
