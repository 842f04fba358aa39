"""grounding_dino.launch.py run by the real launch with stand-ins: Isaac ROS Grounding DINO's
launch file (its arguments, one recording process) and the node's executables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("launch_ros", reason="launch and launch_ros are not installed")
from launch_stand_ins import REPO_ROOT, add_stand_in, make_prefix, run_launch


@pytest.fixture()
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_prefix(tmp_path, monkeypatch)


# The launch arguments of Isaac ROS Grounding DINO's isaac_ros_grounding_dino.launch.py, as its
# source declares them (NVIDIA-ISAAC-ROS/isaac_ros_object_detection, Isaac ROS 4.4).
ISAAC_GROUNDING_DINO_ARGUMENTS = (
    "input_image_width",
    "input_image_height",
    "network_image_width",
    "network_image_height",
    "encoder_image_mean",
    "encoder_image_stddev",
    "model_file_path",
    "engine_file_path",
    "input_tensor_names",
    "input_binding_names",
    "output_tensor_names",
    "output_binding_names",
    "tensorrt_verbose",
    "force_engine_update",
    "confidence_threshold",
)
# A stand-in for its launch file: the same arguments, and one process (a stand-in too) that
# writes down the arguments' values and the remappings it was started with.
ISAAC_LAUNCH_STAND_IN = """
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

NAMES = {names!r}


def _nodes(context):
    values = [f"{{n}}={{context.launch_configurations[n]}}" for n in NAMES]
    return [Node(package="isaac_ros_grounding_dino", executable="grounding_dino", arguments=values)]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value="") for name in NAMES]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
"""


def test_grounding_dino_launch_wires_its_boxes_into_the_node(prefix) -> None:
    package = "isaac_ros_grounding_dino"
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / package).write_text("")
    launch_folder = prefix / "share" / package / "launch"
    launch_folder.mkdir(parents=True)
    (launch_folder / "isaac_ros_grounding_dino.launch.py").write_text(
        ISAAC_LAUNCH_STAND_IN.format(names=ISAAC_GROUNDING_DINO_ARGUMENTS)
    )
    add_stand_in(prefix, package, "grounding_dino")
    code, started = run_launch(
        prefix,
        REPO_ROOT / "launch" / "grounding_dino.launch.py",
        model_file_path="/models/gd.onnx",
        engine_file_path="/models/gd.plan",
        image_topic="/camera/color/image_raw",
        camera_info_topic="/camera/color/camera_info",
        backend="onnxruntime",
    )
    assert code == 0 and set(started) == {"seg_node", "grounding_dino"}
    isaac = started["grounding_dino"]
    given = dict(a.split("=", 1) for a in isaac.argv[: isaac.argv.index("--ros-args")])
    assert given["model_file_path"] == "/models/gd.onnx"
    assert (given["network_image_width"], given["network_image_height"]) == ("960", "544")
    assert isaac.remappings["image"] == "/camera/color/image_raw"
    assert isaac.remappings["camera_info"] == "/camera/color/camera_info"
    node = started["seg_node"]
    assert node.remappings["detections"] == "/detections_output"
    assert node.remappings["image"] == "/camera/color/image_raw"
    assert node.parameters["detections.input_size"] == "960x544"
    assert node.parameters["detections.letterbox"] == "bottom_right"
    assert node.parameters["backend"] == "onnxruntime"  # seg.launch.py's arguments pass through


def test_grounding_dino_launch_passes_only_arguments_its_launch_file_declares() -> None:
    path = REPO_ROOT / "launch" / "grounding_dino.launch.py"
    spec = importlib.util.spec_from_file_location("grounding_dino_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.GROUNDING_DINO_ARGUMENTS) <= set(ISAAC_GROUNDING_DINO_ARGUMENTS)
    declared = {a.name for a in module.generate_launch_description().get_launch_arguments()}
    assert set(module.GROUNDING_DINO_ARGUMENTS) <= declared
