"""launch/seg.launch.py run by the real launch and launch_ros, with stand-in executables.

Each test runs the launch file in a LaunchService with a package prefix of its own in front of
AMENT_PREFIX_PATH: the package's config files, and in place of seg_node, seg_lifecycle_node and
rviz2 a small program that writes down its command line, the parameter files it was given and
its Fast DDS variables, then exits. So the tests see exactly what each process would be started
with: node name and namespace, remappings, parameters (types included), log level, environment.

What the started node then does is test_launch.py's: the real node under `ros2 launch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("launch_ros", reason="launch and launch_ros are not installed")
from launch.actions import RegisterEventHandler
from launch_ros.actions import LifecycleNode
from launch_stand_ins import (
    REPO_ROOT,
    installed,
    load_launch_module,
    make_prefix,
    run_launch,
)

from mobilesam_ros.core.choices import BACKENDS
from mobilesam_ros.ros.dds_profile import (
    FAST_DDS_2_PROFILE_VARIABLE,
    FAST_DDS_3_PROFILE_VARIABLE,
)
from mobilesam_ros.ros.parameters import NODE_NAME, PARAMETERS

SPECS = {spec.name: spec for spec in PARAMETERS}
# Launch arguments that set the node parameter of the same name only when given.
# Launch arguments -> the node parameter each sets only when given.
PARAMETER_ARGUMENTS = {
    "backend": "backend",
    "checkpoint": "checkpoint",
    "device": "device",
    "detections_input_size": "detections.input_size",
    "detections_letterbox": "detections.letterbox",
    "use_compressed": "use_compressed",
    "use_sim_time": "use_sim_time",
    "cameras": "cameras",
}
SUBSCRIPTIONS = (
    "image",
    "image/compressed",
    "detections",
    "yolo_detections",
    "prompts",
    "clicked_pixel_stamped",
    "clicked_pixel",
    "depth",
    "camera_info",
)


@pytest.fixture()
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_prefix(tmp_path, monkeypatch)


# --- arguments --------------------------------------------------------------------------


def test_arguments_are_declared_with_descriptions_and_defaults() -> None:
    arguments = {
        a.name: a for a in load_launch_module().generate_launch_description().get_launch_arguments()
    }
    for name in (
        "image_topic",
        "clicked_pixel_stamped_topic",
        "lifecycle",
        "autostart",
        *PARAMETER_ARGUMENTS,
    ):
        assert name in arguments
    for name, argument in arguments.items():
        assert argument.description.strip(), f"launch argument {name!r}: no description"
    # A parameter's argument is described by the parameter's own description and values.
    assert arguments["backend"].description.endswith(
        f"{', '.join(BACKENDS)}. Sets parameter backend when given."
    )
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Launch arguments") :]
    section = section[: section.index("\n### ", 1)]
    missing = [name for name in arguments if f"`{name}`" not in section]
    assert not missing, f"launch arguments missing from the README's table: {missing}"


# --- what the node is started with -------------------------------------------------------------


def test_defaults_start_seg_node_with_the_installed_parameter_file_only(prefix) -> None:
    code, started = run_launch(prefix)
    assert code == 0 and set(started) == {"seg_node"}  # rviz2 only when asked for
    node = started["seg_node"]
    assert node.argv.count("--params-file") == 1
    assert node.argv[node.argv.index("--params-file") + 1] == installed(
        prefix, "config", "seg.yaml"
    )
    assert node.remappings["__node"] == NODE_NAME and node.remappings["__ns"] == "/"
    assert node.log_level == "info"
    assert node.env == {FAST_DDS_3_PROFILE_VARIABLE: installed(prefix, "config", "fastdds.xml")}


def test_topic_arguments_remap_every_input(prefix) -> None:
    _, started = run_launch(prefix)
    remappings = {k: v for k, v in started["seg_node"].remappings.items() if not k.startswith("__")}
    assert remappings == {
        "image": "image",
        "image/compressed": "image/compressed",
        "detections": "detections",
        "yolo_detections": "yolo_detections",
        "prompts": "prompts",
        # Stamped pixels: never rviz's /clicked_point, whose points are metres in a TF frame.
        "clicked_pixel_stamped": "clicked_pixel_stamped",
        # rqt_image_view publishes clicks (geometry_msgs/Point) on <image topic>_mouse_left.
        "clicked_pixel": "image_mouse_left",
        "depth": "depth",
        "camera_info": "camera_info",
    }
    assert sorted(remappings) == sorted(SUBSCRIPTIONS)
    _, started = run_launch(
        prefix,
        image_topic="/camera/image_raw",
        detections_topic="/yolo/detections",
        namespace="cam1",
        log_level="debug",
    )
    node = started["seg_node"]
    assert node.remappings["image"] == "/camera/image_raw"
    assert node.remappings["image/compressed"] == "/camera/image_raw/compressed"
    assert node.remappings["clicked_pixel"] == "/camera/image_raw_mouse_left"
    assert node.remappings["detections"] == "/yolo/detections"
    assert node.remappings["__ns"] == "/cam1" and node.log_level == "debug"


def test_given_parameter_arguments_override_the_file_with_their_types(prefix) -> None:
    _, started = run_launch(
        prefix, backend="onnxruntime", checkpoint="/weights/0123", use_sim_time="true"
    )
    node = started["seg_node"]
    assert node.argv.count("--params-file") == 2  # the installed file first: the arguments win
    assert node.parameters["backend"] == "onnxruntime"
    assert node.parameters["checkpoint"] == "/weights/0123"  # a path of digits stays a string
    assert node.parameters["use_sim_time"] is True


@pytest.mark.parametrize("name", PARAMETER_ARGUMENTS)
def test_each_parameter_argument_overrides_only_itself(prefix, name: str) -> None:
    value = {
        "backend": "onnxruntime",
        "checkpoint": "/weights/mobile_sam.pt",
        "device": "cpu",
        "detections_input_size": "960x544",
        "detections_letterbox": "bottom_right",
        "cameras": "[front,left]",
    }
    _, started = run_launch(prefix, **{name: value.get(name, "true")})
    node = started["seg_node"]
    files = [node.argv[i + 1] for i, a in enumerate(node.argv) if a == "--params-file"]
    assert files[0] == installed(prefix, "config", "seg.yaml")
    parameter = PARAMETER_ARGUMENTS[name]
    assert list(node.parameter_files[1]) == [parameter]
    spec = SPECS.get(parameter)
    if spec is not None:  # use_sim_time is every node's own
        given = node.parameter_files[1][parameter]
        expected_type = list if isinstance(spec.default, tuple) else type(spec.default)
        assert type(given) is expected_type
    if name == "cameras":
        assert node.parameter_files[1]["cameras"] == ["front", "left"]


def test_bad_boolean_argument_fails_the_launch(prefix) -> None:
    code, started = run_launch(prefix, use_compressed="yes please")
    assert code != 0 and not started


def test_cameras_argument_takes_a_list_or_bare_names(prefix) -> None:
    _, started = run_launch(prefix, cameras="front,rear_left")
    assert started["seg_node"].parameter_files[1]["cameras"] == ["front", "rear_left"]
    code, started = run_launch(prefix, cameras="{front: 1}")
    assert code != 0 and not started


def test_another_node_name_needs_a_parameter_file_that_names_it(prefix, tmp_path) -> None:
    code, started = run_launch(prefix, node_name="cam_seg")
    assert code != 0 and not started  # its values would silently not apply
    wildcard = tmp_path / "all.yaml"
    wildcard.write_text("/**:\n  ros__parameters:\n    backend: onnxruntime\n")
    code, started = run_launch(prefix, node_name="cam_seg", params_file=str(wildcard))
    assert code == 0 and started["seg_node"].remappings["__node"] == "cam_seg"


# --- rviz2 and the DDS profile ---------------------------------------------------------------


def test_rviz_gets_the_namespace_profile_and_sim_time(prefix) -> None:
    _, started = run_launch(prefix, rviz="true", namespace="cam1", use_sim_time="true")
    rviz = started["rviz2"]
    assert rviz.argv[: rviz.argv.index("--ros-args")] == [
        "-d",
        installed(prefix, "config", "seg.rviz"),
    ]
    assert rviz.remappings["__ns"] == "/cam1"  # its relative topics resolve to the node's
    assert rviz.parameters["use_sim_time"] is True
    assert rviz.env == started["seg_node"].env
    _, started = run_launch(prefix, rviz="true")
    assert "use_sim_time" not in started["rviz2"].parameters  # not given: rviz2's own default


@pytest.mark.parametrize(
    ("distro", "variable"),
    [
        ("humble", FAST_DDS_2_PROFILE_VARIABLE),
        ("jazzy", FAST_DDS_2_PROFILE_VARIABLE),
        ("kilted", FAST_DDS_3_PROFILE_VARIABLE),
    ],
)
def test_dds_profile_in_the_variable_of_the_distribution(
    prefix, monkeypatch, distro, variable
) -> None:
    monkeypatch.setenv("ROS_DISTRO", distro)
    _, started = run_launch(prefix)
    assert started["seg_node"].env == {variable: installed(prefix, "config", "fastdds.xml")}


def test_dds_profile_leaves_the_shells_own_configuration_alone(
    prefix, monkeypatch, tmp_path
) -> None:
    own = tmp_path / "own.xml"
    own.write_text("<profiles/>")
    monkeypatch.setenv(FAST_DDS_2_PROFILE_VARIABLE, str(own))
    _, started = run_launch(prefix)
    assert started["seg_node"].env == {FAST_DDS_2_PROFILE_VARIABLE: str(own)}  # inherited only
    monkeypatch.delenv(FAST_DDS_2_PROFILE_VARIABLE)
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    _, started = run_launch(prefix)
    assert started["seg_node"].env == {}
    monkeypatch.delenv("RMW_IMPLEMENTATION")
    _, started = run_launch(prefix, dds_profile="")
    assert started["seg_node"].env == {}
    code, started = run_launch(prefix, dds_profile="/nonexistent/fastdds.xml")
    assert code != 0 and not started


# --- the lifecycle variant ---------------------------------------------------------------------


def test_lifecycle_starts_the_managed_node(prefix) -> None:
    code, started = run_launch(prefix, lifecycle="true", autostart="false")
    assert code == 0 and set(started) == {"seg_lifecycle_node"}
    node = started["seg_lifecycle_node"]
    assert node.remappings["__node"] == NODE_NAME
    assert node.remappings["image"] == "image"


def test_autostart_configures_then_activates_once() -> None:
    """The actions only (a run would wait for the stand-in's lifecycle services); the real
    node coming up active under `ros2 launch` is test_launch.py's."""
    module = load_launch_module()
    from launch import LaunchContext

    def actions(**given: str) -> list[Any]:
        context = LaunchContext()
        arguments = {
            a.name: a.default_value
            for a in module.generate_launch_description().get_launch_arguments()
        }
        for name, argument in arguments.items():
            context.launch_configurations[name] = "".join(s.perform(context) for s in argument)
        context.launch_configurations.update(given)
        return module._launch_nodes(context)

    started = actions(lifecycle="true", params_file=str(REPO_ROOT / "config" / "seg.yaml"))
    nodes = [a for a in started if isinstance(a, LifecycleNode)]
    handlers = [a for a in started if isinstance(a, RegisterEventHandler)]
    assert len(nodes) == 1 and len(handlers) == 1
    assert handlers[0].event_handler.handle_once
    without = actions(
        lifecycle="true", autostart="false", params_file=str(REPO_ROOT / "config" / "seg.yaml")
    )
    assert not [a for a in without if isinstance(a, RegisterEventHandler)]
