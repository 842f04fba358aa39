"""Start the MobileSAM segmentation node, and optionally rviz2 showing its images.

    ros2 launch mobilesam_ros seg.launch.py image_topic:=/camera/image_raw
    ros2 launch mobilesam_ros seg.launch.py namespace:=cam1 backend:=onnxruntime rviz:=true
    ros2 launch mobilesam_ros seg.launch.py lifecycle:=true autostart:=false

Parameters come from params_file (default: the installed config/seg.yaml). The backend,
checkpoint, device, detections_input_size, detections_letterbox, use_compressed, cameras and
use_sim_time arguments override it only when given: left empty (their default) they are not
passed, and the file's value (else the node's own default) holds; use_sim_time, when given,
reaches rviz2 too.
test/dds/test_launch_file.py runs this file through launch with stand-in executables and checks
what each process is started with.

lifecycle:=true starts the managed node (seg_lifecycle_node) instead; with autostart:=true (the
default) launch then drives it through configure and activate, once: a later deactivate or
cleanup by a lifecycle manager is left as it is.

The *_topic arguments remap the node's relative input names. A relative value is resolved in the
node's namespace, an absolute one (/camera/image_raw) is used as given. image/compressed follows
image_topic, so a compressed stream is read from <image_topic>/compressed; clicked pixels are read
from <image_topic>_mouse_left, where rqt_image_view publishes them, unless clicked_pixel_topic
names another topic.

rviz2 starts in the node's namespace and its configuration names relative topics (overlay,
mask_image), so namespace:=cam1 rviz:=true shows cam1's images.

cameras:=[front,left] serves several cameras with one model: each camera's topics are under its
name (front/image, front/masks, ...), relative to the node's namespace. The *_topic arguments
remap the single camera's topics only; remap a camera's topics in a launch file of your own
(remappings=[("front/image", "/front/color/image_raw")]) or with ros2 run ... --ros-args -r
front/image:=/front/color/image_raw. rviz2's configuration shows overlay and mask_image: with
cameras, point its displays at front/overlay and the others.

dds_profile (default: the installed config/fastdds.xml) is the Fast DDS profile file given to the
node's and rviz2's processes through the variable their Fast DDS reads (FASTRTPS_... on Humble and
Jazzy, FASTDDS_... from Kilted on); empty leaves this shell's environment as it is. A profile the
shell already exported wins, and none applies when RMW_IMPLEMENTATION names another middleware;
the log says which configuration is in effect. The camera driver's process needs the profile too:
see "Camera frames lost?" in the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from mobilesam_ros.ros.dds_profile import launch_environment
from mobilesam_ros.ros.parameters import launch_argument_description

PACKAGE = "mobilesam_ros"
EXECUTABLE = "seg_node"
LIFECYCLE_EXECUTABLE = "seg_lifecycle_node"
DEFAULT_NODE_NAME = "mobilesam"
# Launch arguments that set a node parameter when given; an empty value (the default) is not
# passed, so that params_file keeps its say.
# Launch argument -> the string parameter it sets (when given).
STRING_PARAMETER_ARGUMENTS = {
    "backend": "backend",
    "checkpoint": "checkpoint",
    "device": "device",
    "detections_input_size": "detections.input_size",
    "detections_letterbox": "detections.letterbox",
}
BOOLEAN_PARAMETER_ARGUMENTS = ("use_compressed", "use_sim_time")
# The arguments of the node's own parameters, described by the parameters' descriptions.
PARAMETER_ARGUMENTS = {
    **STRING_PARAMETER_ARGUMENTS,
    "use_compressed": "use_compressed",
    "cameras": "cameras",
}


def camera_names(text: str) -> list[str]:
    """cameras:=[front,left] (or front,left) -> ["front", "left"]."""
    import yaml

    value = yaml.safe_load(text if text.lstrip().startswith("[") else f"[{text}]")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"launch argument cameras:={text!r}: expected names, e.g. [front,left]")
    return value


def _boolean(arguments: dict[str, str], name: str) -> bool:
    value = arguments[name].strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={arguments[name]!r}: expected true or false")
    return value == "true"


def parameter_overrides(arguments: dict[str, str]) -> dict[str, str | bool | list[str]]:
    """The node parameters that the given (non-empty) parameter arguments set."""
    overrides: dict[str, str | bool | list[str]] = {}
    for name, parameter in STRING_PARAMETER_ARGUMENTS.items():
        value = arguments.get(name, "").strip()
        if value:
            overrides[parameter] = value
    for name in BOOLEAN_PARAMETER_ARGUMENTS:
        if arguments.get(name, "").strip():
            overrides[name] = _boolean(arguments, name)
    if arguments.get("cameras", "").strip():
        overrides["cameras"] = camera_names(arguments["cameras"])
    return overrides


def node_key_matches(key: str, namespace: str, node_name: str) -> bool:
    """True when a parameter file's node key (`/**/name`, `/ns/name`, `/**`, ...) names the node.

    The wildcards as rcl reads them: `*` is one name token, `**` any number of them.
    """
    full_name = "/".join(part for part in (*namespace.split("/"), node_name) if part)
    pattern = ""
    for token in key.strip("/").split("/"):
        if token == "**":
            pattern += "(/[^/]+)*"
        else:
            pattern += "/" + re.escape(token).replace(r"\*", "[^/]*")
    return re.fullmatch(pattern, "/" + full_name) is not None


def check_params_file_names_node(params_file: str, namespace: str, node_name: str) -> None:
    """Fails when params_file has no block for the node: its values would be silently ignored."""
    import yaml

    path = Path(params_file)
    if not path.is_file():
        raise FileNotFoundError(f"launch argument params_file:={params_file!r}: no such file")
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(document, dict):
        raise ValueError(f"params_file {params_file}: expected node blocks at the top level")
    if not any(node_key_matches(str(key), namespace, node_name) for key in document):
        raise ValueError(
            f"params_file {params_file} has no block for node {node_name!r} (namespace "
            f"{namespace or '/'}): its blocks are {sorted(map(str, document))}; name the node "
            f"in the file ('/**/{node_name}:' or '/**:') or leave node_name as it is"
        )


def _autostart(node: LifecycleNode) -> list[Any]:
    """configure now, and activate once that configure has ended in inactive (one time only)."""
    return [
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state="configuring",
                goal_state="inactive",
                entities=[
                    EmitEvent(
                        event=ChangeState(
                            lifecycle_node_matcher=matches_action(node),
                            transition_id=Transition.TRANSITION_ACTIVATE,
                        )
                    )
                ],
                handle_once=True,
            )
        ),
        EmitEvent(
            event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_CONFIGURE,
            )
        ),
    ]


def _launch_nodes(context: LaunchContext) -> list[Any]:
    arguments = dict(context.launch_configurations)
    namespace = arguments["namespace"]
    node_name = arguments["node_name"]
    params_file = arguments["params_file"]
    check_params_file_names_node(params_file, namespace, node_name)
    environment, dds_line = launch_environment(arguments["dds_profile"], os.environ)
    given = parameter_overrides(arguments)
    overrides = {
        # value_type=str keeps strings strings: otherwise launch_ros reads the text as YAML
        # (a checkpoint path of digits becomes a number).
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in given.items()
    }
    image_topic = arguments["image_topic"]
    lifecycle = _boolean(arguments, "lifecycle")
    node_class = LifecycleNode if lifecycle else Node
    segmentation_node = node_class(
        package=PACKAGE,
        executable=LIFECYCLE_EXECUTABLE if lifecycle else EXECUTABLE,
        name=node_name,
        namespace=namespace,
        parameters=[params_file, overrides] if overrides else [params_file],
        remappings=[
            ("image", image_topic),
            ("image/compressed", f"{image_topic}/compressed"),
            ("detections", arguments["detections_topic"]),
            ("yolo_detections", arguments["yolo_detections_topic"]),
            ("prompts", arguments["prompts_topic"]),
            ("clicked_pixel_stamped", arguments["clicked_pixel_stamped_topic"]),
            ("clicked_pixel", arguments["clicked_pixel_topic"] or f"{image_topic}_mouse_left"),
            ("depth", arguments["depth_topic"]),
            ("camera_info", arguments["camera_info_topic"]),
        ],
        arguments=["--ros-args", "--log-level", arguments["log_level"]],
        additional_env=environment,
        output="screen",
    )
    rviz_node = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        # Its displays name relative topics, resolved in this namespace: the node's.
        namespace=namespace,
        arguments=["-d", arguments["rviz_config"]],
        parameters=[{"use_sim_time": given["use_sim_time"]}] if "use_sim_time" in given else [],
        additional_env=environment,
        condition=IfCondition(arguments["rviz"]),
        output="screen",
    )
    actions: list[Any] = [LogInfo(msg=dds_line), segmentation_node, rviz_node]
    if lifecycle and _boolean(arguments, "autostart"):
        actions += _autostart(segmentation_node)
    return actions


def generate_launch_description() -> LaunchDescription:
    package_share = FindPackageShare(PACKAGE)

    arguments = [
        DeclareLaunchArgument(
            "image_topic",
            default_value="image",
            description="Topic of the input images (sensor_msgs/Image); "
            "<image_topic>/compressed is used when use_compressed is true.",
        ),
        DeclareLaunchArgument(
            "detections_topic",
            default_value="detections",
            description="Topic of the detector's boxes used as prompts "
            "(vision_msgs/Detection2DArray).",
        ),
        DeclareLaunchArgument(
            "yolo_detections_topic",
            default_value="yolo_detections",
            description="Topic of yolo_ros's boxes (yolo_msgs/DetectionArray, e.g. "
            "/yolo/tracking or /yolo/detections); read when yolo_msgs is installed.",
        ),
        DeclareLaunchArgument(
            "prompts_topic",
            default_value="prompts",
            description="Topic of explicit point and box prompts (mobilesam_ros/PromptArray).",
        ),
        DeclareLaunchArgument(
            "clicked_pixel_stamped_topic",
            default_value="clicked_pixel_stamped",
            description="Topic of stamped single point prompts in image pixels "
            "(geometry_msgs/PointStamped); not rviz's /clicked_point, which holds metres.",
        ),
        DeclareLaunchArgument(
            "clicked_pixel_topic",
            default_value="",
            description="Topic of clicked pixels (geometry_msgs/Point, as rqt_image_view "
            "publishes them); empty: <image_topic>_mouse_left, rqt_image_view's topic.",
        ),
        DeclareLaunchArgument(
            "depth_topic",
            default_value="depth",
            description="Depth registered to the color image (sensor_msgs/Image, 16UC1 mm or "
            "32FC1 m), e.g. /camera/aligned_depth_to_color/image_raw; for the 3D outputs.",
        ),
        DeclareLaunchArgument(
            "camera_info_topic",
            default_value="camera_info",
            description="The color camera's sensor_msgs/CameraInfo; for the 3D outputs.",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the node and of rviz2; relative topics are resolved in it.",
        ),
        DeclareLaunchArgument(
            "node_name",
            default_value=DEFAULT_NODE_NAME,
            description="Name of the node; params_file must have a block for it "
            "('/**/<node_name>:' or '/**:').",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([package_share, "config", "seg.yaml"]),
            description="YAML file with the node's parameters.",
        ),
        *(
            DeclareLaunchArgument(
                argument, default_value="", description=launch_argument_description(parameter)
            )
            for argument, parameter in PARAMETER_ARGUMENTS.items()
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="",
            description="true: follow /clock (bag playback, simulation); overrides params_file "
            "when given, and is passed to rviz2 too.",
        ),
        DeclareLaunchArgument(
            "dds_profile",
            default_value=PathJoinSubstitution([package_share, "config", "fastdds.xml"]),
            description="Fast DDS profile file for the node and rviz2 (large images over "
            "shared memory and UDP); empty: the shell's own middleware configuration.",
        ),
        DeclareLaunchArgument(
            "log_level",
            default_value="info",
            description="Logging level of the node: debug, info, warn, error or fatal.",
        ),
        DeclareLaunchArgument(
            "lifecycle",
            default_value="false",
            description="true: start the managed node (seg_lifecycle_node) instead of seg_node.",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="With lifecycle:=true: configure and activate the node once it is up "
            "(false: leave it unconfigured for a lifecycle manager).",
        ),
        DeclareLaunchArgument(
            "rviz",
            default_value="false",
            description="Also start rviz2 showing the overlay and mask images.",
        ),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=PathJoinSubstitution([package_share, "config", "seg.rviz"]),
            description="rviz2 configuration file.",
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_launch_nodes)])
