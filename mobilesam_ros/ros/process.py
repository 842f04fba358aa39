"""Running a segmentation node as a process: exit codes, and logging routed to the ROS logger."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import Executor, ExternalShutdownException

from mobilesam_ros.core import MobileSamError
from mobilesam_ros.ros import stop_signals


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
    executor_factory: Callable[[], Executor] | None = None,
) -> int:
    """Spin a node until shutdown; exit codes: 0 clean (also after SIGINT/SIGTERM, however many),
    2 bad parameter or model, 1 a defect."""
    stop = stop_signals.install()  # before rclpy.init: rclpy's handlers chain to these
    if stop.requested.is_set():  # signalled while the executable was importing
        return 0
    rclpy.init(args=args)
    node = None
    executor = None
    code = 0
    try:
        executor = executor_factory() if executor_factory is not None else None
        node = make_node()
        if executor is None:
            rclpy.spin(node)
        else:
            executor.add_node(node)
            executor.spin()
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
        # A stop signal shuts the ROS context down under the node's feet (e.g. while it is
        # being constructed): what fails then is the shutdown, not a defect.
        if not stop.requested.is_set():
            traceback.print_exc()
            code = 1
    finally:
        finished = True
        if node is not None:
            runtime = runtime_of(node)
            if runtime is not None:
                finished = runtime.stop()
                runtime.close()
                if runtime.loading_error and not stop.requested.is_set():
                    code = 2
            if executor is not None and finished:
                # Its threads are idle; one still in a model load would block this (and the
                # interpreter's exit): that case leaves through os._exit below.
                executor.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    if not finished:
        # A model load or an inference is still running in native code; it cannot be
        # interrupted and holds no state worth saving, so leave without waiting for it (with
        # the real exit code).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    stop.finished()
    return code
