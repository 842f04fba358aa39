"""Start the MobileSAM segmentation node, and optionally rviz2 showing its images.

    ros2 launch mobilesam_ros seg.launch.py image_topic:=/camera/image_raw
    ros2 launch mobilesam_ros seg.launch.py namespace:=cam1 backend:=onnxruntime rviz:=true

Parameters come from params_file (default: the installed config/seg.yaml). The backend,
checkpoint, device, use_compressed and use_sim_time arguments override it only when given: left
empty (their default) they are not passed, and the file's value (else the node's own default)
holds. test/test_launch_static.py checks these semantics.

The *_topic arguments remap the node's relative input names. A relative value is resolved in the
node's namespace, an absolute one (/camera/image_raw) is used as given. image/compressed follows
image_topic, so a compressed stream is read from <image_topic>/compressed; clicked pixels are read
from <image_topic>_mouse_left, where rqt_image_view publishes them, unless clicked_pixel_topic
names another topic.

rviz2 starts in the node's namespace and its configuration names relative topics (overlay,
mask_image), so namespace:=cam1 rviz:=true shows cam1's images.

dds_profile (default: the installed config/fastdds.xml) is the Fast DDS profile file given to the
node's and rviz2's processes through the variable their Fast DDS reads (FASTRTPS_... on Humble and
Jazzy, FASTDDS_... from Kilted on); empty leaves this shell's environment as it is. The camera
driver's process needs it too: see "Camera frames lost?" in the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mobilesam_ros"
EXECUTABLE = "seg_node"
DEFAULT_NODE_NAME = "mobilesam"
# Launch arguments that set the node parameter of the same name when given; an empty value (the
# default) is not passed, so that params_file keeps its say.
STRING_PARAMETER_ARGUMENTS = ("backend", "checkpoint", "device")
BOOLEAN_PARAMETER_ARGUMENTS = ("use_compressed", "use_sim_time")
# Fast DDS 2.x (Humble 2.6, Jazzy 2.14) reads the first variable, Fast DDS 3 (Kilted on) the
# second. The same choice as mobilesam_ros.tools.dds_check.profile_variable().
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
FAST_DDS_2_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
FAST_DDS_3_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def parameter_overrides(arguments: dict[str, str]) -> dict[str, str | bool]:
    """The node parameters that the given (non-empty) parameter arguments set."""
    overrides: dict[str, str | bool] = {}
    for name in STRING_PARAMETER_ARGUMENTS:
        value = arguments.get(name, "").strip()
        if value:
            overrides[name] = value
    for name in BOOLEAN_PARAMETER_ARGUMENTS:
        value = arguments.get(name, "").strip().lower()
        if not value:
            continue
        if value not in ("true", "false"):
            raise ValueError(f"launch argument {name}:={arguments[name]!r}: expected true or false")
        overrides[name] = value == "true"
    return overrides


def profile_environment(profile: str, ros_distro: str) -> dict[str, str]:
    """Environment entries that give a process's Fast DDS the profile file ('' gives none)."""
    profile = profile.strip()
    if not profile:
        return {}
    if not Path(profile).is_file():
        raise FileNotFoundError(f"launch argument dds_profile:={profile!r}: no such file")
    if ros_distro.strip().lower() in FAST_DDS_2_DISTROS:
        return {FAST_DDS_2_PROFILE_VARIABLE: profile}
    return {FAST_DDS_3_PROFILE_VARIABLE: profile}


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


def _launch_nodes(context: LaunchContext) -> list[Node]:
    arguments = dict(context.launch_configurations)
    namespace = arguments["namespace"]
    node_name = arguments["node_name"]
    params_file = arguments["params_file"]
    check_params_file_names_node(params_file, namespace, node_name)
    environment = profile_environment(arguments["dds_profile"], os.environ.get("ROS_DISTRO", ""))
    overrides = {
        # value_type=str keeps strings strings: otherwise launch_ros reads the text as YAML
        # (a checkpoint path of digits becomes a number).
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in parameter_overrides(arguments).items()
    }
    image_topic = arguments["image_topic"]
    segmentation_node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=node_name,
        namespace=namespace,
        parameters=[params_file, overrides] if overrides else [params_file],
        remappings=[
            ("image", image_topic),
            ("image/compressed", f"{image_topic}/compressed"),
            ("detections", arguments["detections_topic"]),
            ("prompts", arguments["prompts_topic"]),
            ("clicked_point", arguments["clicked_point_topic"]),
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
        additional_env=environment,
        condition=IfCondition(arguments["rviz"]),
        output="screen",
    )
    return [segmentation_node, rviz_node]


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
            "prompts_topic",
            default_value="prompts",
            description="Topic of explicit point and box prompts (mobilesam_ros/PromptArray).",
        ),
        DeclareLaunchArgument(
            "clicked_point_topic",
            default_value="clicked_point",
            description="Topic of stamped single point prompts in image pixels "
            "(geometry_msgs/PointStamped).",
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
        DeclareLaunchArgument(
            "backend",
            default_value="",
            description="Inference runtime: auto, onnxruntime, torch or tensorrt; overrides "
            "params_file when given.",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="",
            description="Path of mobile_sam.pt; overrides params_file when given.",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="",
            description="Where inference runs: auto, cpu, cuda or cuda:N; overrides params_file "
            "when given.",
        ),
        DeclareLaunchArgument(
            "use_compressed",
            default_value="",
            description="true: read <image_topic>/compressed instead of <image_topic>; overrides "
            "params_file when given.",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="",
            description="true: follow /clock (bag playback, simulation); overrides params_file "
            "when given.",
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
