"""The node's message classes (ros/conversions.ROS_TYPES) for tests outside the colcon install
space.

The package's own messages (mobilesam_ros.msg: InstanceMask, InstanceMaskArray) are generated
into the install space only. Where they are missing, ROS_TYPES is built from the sources with
None for those two classes, which the 3D outputs never build.
"""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

from mobilesam_ros.messages.builders import MessageTypes

CONVERSIONS = Path(__file__).resolve().parents[1] / "mobilesam_ros" / "ros" / "conversions.py"
OWN_MESSAGES = "mobilesam_ros.msg"


def node_message_types() -> MessageTypes:
    try:
        from mobilesam_ros.ros.conversions import ROS_TYPES
    except ModuleNotFoundError as error:
        if error.name != OWN_MESSAGES:
            raise
    else:
        return ROS_TYPES
    stand_in = types.ModuleType(OWN_MESSAGES)
    stand_in.InstanceMask = stand_in.InstanceMaskArray = None
    sys.modules[OWN_MESSAGES] = stand_in
    try:
        return runpy.run_path(str(CONVERSIONS))["ROS_TYPES"]
    finally:
        del sys.modules[OWN_MESSAGES]
