"""Start the MobileSAM segmentation node, and optionally rviz2 showing its images.

    ros2 launch mobilesam_ros seg.launch.py image_topic:=/camera/image_raw
    ros2 launch mobilesam_ros seg.launch.py namespace:=robot1 backend:=onnxruntime rviz:=true

Parameters come from params_file (default: the installed config/seg.yaml); the backend and
checkpoint arguments override it. Their defaults equal the node's own defaults in
mobilesam_ros/ros/parameters.py, and test/test_launch_static.py checks that they stay equal.

The *_topic arguments remap the node's relative input names. A relative value is resolved in the
node's namespace, an absolute one (/camera/image_raw) is used as given. image/compressed follows
image_topic, so a compressed stream is read from <image_topic>/compressed.

The rviz configuration subscribes to /overlay and /mask_image: with a namespace, pick the
namespaced topics (/robot1/overlay, ...) in the rviz Image displays.
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mobilesam_ros"


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
            description="Topic of single point prompts in image pixels "
            "(geometry_msgs/PointStamped).",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the node; relative topics are resolved in it.",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([package_share, "config", "seg.yaml"]),
            description="YAML file with the node's parameters.",
        ),
        DeclareLaunchArgument(
            "backend",
            default_value="auto",
            description="Inference runtime: auto, onnxruntime, torch or tensorrt "
            "(overrides params_file).",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="",
            description="Path of mobile_sam.pt; empty downloads the official checkpoint once "
            "(overrides params_file).",
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
    ]

    image_topic = LaunchConfiguration("image_topic")
    segmentation_node = Node(
        package=PACKAGE,
        executable="seg_node",
        name="mobilesam",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                # value_type=str keeps them strings: otherwise launch_ros reads the text as YAML
                # (an empty checkpoint becomes null, which older releases refuse).
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
            },
        ],
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
            ("detections", LaunchConfiguration("detections_topic")),
            ("prompts", LaunchConfiguration("prompts_topic")),
            ("clicked_point", LaunchConfiguration("clicked_point_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
    )

    rviz_node = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([package_share, "config", "seg.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )

    return LaunchDescription([*arguments, segmentation_node, rviz_node])
