"""Text-prompted segmentation: Isaac ROS Grounding DINO's boxes as this node's prompts.

    ros2 launch mobilesam_ros grounding_dino.launch.py \\
        model_file_path:=/models/grounding_dino.onnx \\
        engine_file_path:=/models/grounding_dino.plan \\
        image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info \\
        input_image_width:=1920 input_image_height:=1080

Starts Isaac ROS Grounding DINO (package isaac_ros_grounding_dino, its launch file
isaac_ros_grounding_dino.launch.py, with the arguments named as there) and seg.launch.py wired to
it: Grounding DINO publishes vision_msgs/Detection2DArray on detections_output with boxes in its
network input (the camera image scaled keeping its aspect ratio into network_image_width x
network_image_height, padded right and below), empty ids, the text phrase as class id, and one
box per query above confidence_threshold (near-duplicates). So the node is started with
detections_input_size = <network width>x<network height>, detections_letterbox = bottom_right,
and its default detections.nms_iou suppresses the duplicates. The text prompt is Grounding
DINO's own: its preprocessor's default_prompt parameter or its set_prompt service (phrases
separated by periods).

Grounding DINO's nodes read `image` and `camera_info`; image_topic and camera_info_topic remap
them for Grounding DINO and for this node alike. Every other argument of seg.launch.py can be
given here too and is passed on.
"""

from __future__ import annotations

from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import SetRemap
from launch_ros.substitutions import FindPackageShare

GROUNDING_DINO_PACKAGE = "isaac_ros_grounding_dino"
GROUNDING_DINO_LAUNCH = "isaac_ros_grounding_dino.launch.py"
# Its detections output, as its decoder names it, in the root namespace.
GROUNDING_DINO_DETECTIONS = "/detections_output"
# Arguments of Isaac ROS Grounding DINO's launch file that this one passes on, with their
# defaults there (model and engine paths are required there).
GROUNDING_DINO_ARGUMENTS = {
    "model_file_path": ("", "Grounding DINO's ONNX model (required)."),
    "engine_file_path": ("", "Where Grounding DINO's TensorRT engine is (built) (required)."),
    "input_image_width": ("1920", "Camera image width in pixels."),
    "input_image_height": ("1080", "Camera image height in pixels."),
    "network_image_width": ("960", "Grounding DINO's network input width."),
    "network_image_height": ("544", "Grounding DINO's network input height."),
    "confidence_threshold": ("0.5", "Grounding DINO's least score for a detection."),
    "force_engine_update": ("False", "Rebuild Grounding DINO's engine."),
}
# Arguments of seg.launch.py that this one sets; the others are passed on as given.
WIRED = ("detections_input_size", "detections_letterbox")


def _launch(context: LaunchContext) -> list:
    arguments = dict(context.launch_configurations)
    size = f"{arguments['network_image_width']}x{arguments['network_image_height']}"
    grounding_dino = GroupAction(
        [
            SetRemap("image", arguments["image_topic"]),
            SetRemap("camera_info", arguments["camera_info_topic"]),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution(
                        [FindPackageShare(GROUNDING_DINO_PACKAGE), "launch", GROUNDING_DINO_LAUNCH]
                    )
                ),
                launch_arguments=[(name, arguments[name]) for name in GROUNDING_DINO_ARGUMENTS],
            ),
        ],
        scoped=True,
    )
    wired = {
        "detections_input_size": size,
        "detections_letterbox": "bottom_right",
    }
    passed = {
        name: value
        for name, value in arguments.items()
        if name not in GROUNDING_DINO_ARGUMENTS and name not in WIRED
    }
    segmentation = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("mobilesam_ros"), "launch", "seg.launch.py"])
        ),
        launch_arguments=list({**passed, **wired}.items()),
    )
    return [grounding_dino, segmentation]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in GROUNDING_DINO_ARGUMENTS.items()
    ]
    arguments += [
        DeclareLaunchArgument(
            "image_topic",
            default_value="image",
            description="Camera images, for Grounding DINO and the segmentation node.",
        ),
        DeclareLaunchArgument(
            "detections_topic",
            default_value=GROUNDING_DINO_DETECTIONS,
            description="Grounding DINO's detections (its decoder's detections_output).",
        ),
        DeclareLaunchArgument(
            "camera_info_topic",
            default_value="camera_info",
            description="The camera's sensor_msgs/CameraInfo, for Grounding DINO and the node.",
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_launch)])
