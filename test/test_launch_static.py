"""Static checks of launch/seg.launch.py, config/seg.yaml, config/seg.rviz and the DDS profiles.

`launch` and `launch_ros` are not importable here, so the launch file is loaded with small
stand-ins for the classes it uses, which record their arguments: the tests run its
generate_launch_description() and the function that builds the nodes from the launch arguments,
and check what the nodes would be started with. The parameter file is compared with
mobilesam_ros/ros/parameters.py, the single source of the node's parameters: a parameter added
there without config/seg.yaml, or a default changed in one place only, fails these tests.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest
import yaml

from mobilesam_ros.ros.parameters import NODE_NAME, PARAMETERS, ParameterSpec
from mobilesam_ros.tools.dds_check import profile_variable

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "seg.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "seg.yaml"
RVIZ_FILE = REPO_ROOT / "config" / "seg.rviz"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds.xml"
CYCLONEDDS_CONFIG = REPO_ROOT / "config" / "cyclonedds.xml"
CMAKE_FILE = REPO_ROOT / "CMakeLists.txt"

PACKAGE = "mobilesam_ros"
EXECUTABLE = "seg_node"
# The node's relative subscription names, which the launch file remaps.
SUBSCRIPTIONS = (
    "image",
    "image/compressed",
    "detections",
    "prompts",
    "clicked_point",
    "clicked_pixel",
    "depth",
    "camera_info",
)
# Publications shown by the rviz configuration: relative, so that rviz2 started in the node's
# namespace shows that node's images.
RVIZ_DISPLAYS = {
    "overlay": "rviz_default_plugins/Image",
    "mask_image": "rviz_default_plugins/Image",
    "instances_cloud": "rviz_default_plugins/PointCloud2",
    "markers": "rviz_default_plugins/MarkerArray",
}
# A node named NODE_NAME in any namespace: the launch file has a namespace argument, and a plain
# NODE_NAME key would only match the node in the root namespace.
PARAMS_FILE_NODE_KEY = f"/**/{NODE_NAME}"
# Entries of ros__parameters that are not node parameters of PARAMETERS.
NON_SPEC_PARAMETER_GROUPS = ("qos_overrides",)
# Launch arguments that set the node parameter of the same name only when given.
PARAMETER_ARGUMENTS = ("backend", "checkpoint", "device", "use_compressed", "use_sim_time")
# Parameters every ROS 2 node has, not declared in PARAMETERS.
BUILTIN_PARAMETERS = ("use_sim_time",)
LAUNCH_ARGUMENTS = (
    "image_topic",
    "detections_topic",
    "depth_topic",
    "camera_info_topic",
    "prompts_topic",
    "clicked_point_topic",
    "clicked_pixel_topic",
    "namespace",
    "node_name",
    "params_file",
    "dds_profile",
    "log_level",
    "rviz",
    "rviz_config",
    *PARAMETER_ARGUMENTS,
)

SPECS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


# --- Stand-ins for launch and launch_ros ----------------------------------------------------


class Recorded:
    """A launch class stand-in: keeps its positional and keyword arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class DeclareLaunchArgument(Recorded):
    @property
    def name(self) -> str:
        return self.args[0]


class OpaqueFunction(Recorded):
    pass


class IfCondition(Recorded):
    pass


class LaunchDescription(Recorded):
    pass


class LaunchContext(Recorded):
    pass


class PathJoinSubstitution(Recorded):
    pass


class FindPackageShare(Recorded):
    pass


class Node(Recorded):
    pass


class ParameterValue(Recorded):
    pass


STAND_INS = {
    "launch": {},
    "launch.actions": {
        "DeclareLaunchArgument": DeclareLaunchArgument,
        "OpaqueFunction": OpaqueFunction,
    },
    "launch.conditions": {"IfCondition": IfCondition},
    "launch.launch_context": {"LaunchContext": LaunchContext},
    "launch.launch_description": {"LaunchDescription": LaunchDescription},
    "launch.substitutions": {"PathJoinSubstitution": PathJoinSubstitution},
    "launch_ros": {},
    "launch_ros.actions": {"Node": Node},
    "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


@pytest.fixture(scope="module")
def launch_module() -> types.ModuleType:
    """launch/seg.launch.py, imported with the stand-ins in place of launch and launch_ros."""
    saved = {name: sys.modules.get(name) for name in STAND_INS}
    try:
        for name, members in STAND_INS.items():
            module = types.ModuleType(name)
            module.__dict__.update(members)
            sys.modules[name] = module
        spec = importlib.util.spec_from_file_location("seg_launch", LAUNCH_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def description(launch_module: types.ModuleType) -> LaunchDescription:
    return launch_module.generate_launch_description()


@pytest.fixture(scope="module")
def declared(description: LaunchDescription) -> dict[str, DeclareLaunchArgument]:
    arguments: dict[str, DeclareLaunchArgument] = {}
    for entity in description.args[0]:
        if isinstance(entity, DeclareLaunchArgument):
            assert entity.name not in arguments, f"launch argument {entity.name!r} declared twice"
            arguments[entity.name] = entity
    return arguments


def is_installed_share_path(value: Any, *parts: str) -> bool:
    """True for PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])."""
    if not isinstance(value, PathJoinSubstitution):
        return False
    first, *rest = value.args[0]
    return isinstance(first, FindPackageShare) and first.args == (PACKAGE,) and rest == list(parts)


def default_configurations(declared: dict[str, DeclareLaunchArgument]) -> dict[str, str]:
    """The launch configurations when no argument is given: share paths point into the sources."""
    configurations = {}
    for name, argument in declared.items():
        default = argument.kwargs["default_value"]
        if isinstance(default, PathJoinSubstitution):
            default = str(REPO_ROOT.joinpath(*default.args[0][1:]))
        configurations[name] = default
    return configurations


def launch_nodes(
    launch_module: types.ModuleType,
    description: LaunchDescription,
    declared: dict[str, DeclareLaunchArgument],
    **given: str,
) -> tuple[Node, Node]:
    """Runs the launch file's node-building function with these arguments given."""
    functions = [e for e in description.args[0] if isinstance(e, OpaqueFunction)]
    assert len(functions) == 1
    unknown = set(given) - set(declared)
    assert not unknown, f"not launch arguments: {unknown}"
    context = types.SimpleNamespace(
        launch_configurations={**default_configurations(declared), **given}
    )
    nodes = functions[0].kwargs["function"](context)
    by_package = {node.kwargs["package"]: node for node in nodes}
    assert set(by_package) == {PACKAGE, "rviz2"}
    return by_package[PACKAGE], by_package["rviz2"]


@pytest.fixture()
def start(launch_module, description, declared, monkeypatch):
    """start(**arguments) -> (segmentation node, rviz node), as `ros2 launch` would build them."""
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    return lambda **given: launch_nodes(launch_module, description, declared, **given)


# --- Launch file ----------------------------------------------------------------------------


def test_launch_arguments_are_declared_with_descriptions(declared) -> None:
    missing = sorted(set(LAUNCH_ARGUMENTS) - set(declared))
    assert not missing, f"launch arguments not declared: {missing}"
    for name, argument in declared.items():
        description = argument.kwargs.get("description", "")
        assert description.strip(), f"launch argument {name!r}: no description"
        assert "default_value" in argument.kwargs, f"launch argument {name!r}: no default"


def test_launch_argument_defaults(declared) -> None:
    def default(name: str) -> Any:
        return declared[name].kwargs["default_value"]

    assert default("namespace") == ""
    assert default("node_name") == NODE_NAME
    assert default("log_level") == "info"
    assert default("rviz") == "false"
    assert default("clicked_pixel_topic") == ""
    for name in PARAMETER_ARGUMENTS:
        assert default(name) == "", f"{name} must default to empty: not passed, params_file holds"
    assert is_installed_share_path(default("params_file"), "config", "seg.yaml")
    assert is_installed_share_path(default("dds_profile"), "config", "fastdds.xml")
    assert is_installed_share_path(default("rviz_config"), "config", "seg.rviz")


def test_parameter_arguments_name_node_parameters() -> None:
    for name in PARAMETER_ARGUMENTS:
        assert name in SPECS_BY_NAME or name in BUILTIN_PARAMETERS, f"{name}: no such parameter"


def test_parameter_file_alone_when_no_parameter_argument_is_given(start) -> None:
    node, _ = start()
    assert node.kwargs["parameters"] == [str(PARAMS_FILE)]


def test_given_parameter_arguments_override_the_parameter_file(start) -> None:
    node, _ = start(backend="onnxruntime", checkpoint="/weights/0123", use_sim_time="true")
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == str(PARAMS_FILE)  # first, so that the arguments win
    assert set(overrides) == {"backend", "checkpoint", "use_sim_time"}
    # Strings stay strings (a path of digits must not become a number).
    for name, expected in (("backend", "onnxruntime"), ("checkpoint", "/weights/0123")):
        assert isinstance(overrides[name], ParameterValue)
        assert overrides[name].args == (expected,)
        assert overrides[name].kwargs == {"value_type": str}
    assert overrides["use_sim_time"] is True


@pytest.mark.parametrize("name", PARAMETER_ARGUMENTS)
def test_each_parameter_argument_overrides_only_itself(start, name: str) -> None:
    value = {"backend": "onnxruntime", "checkpoint": "/weights/mobile_sam.pt", "device": "cpu"}
    node, _ = start(**{name: value.get(name, "true")})
    _, overrides = node.kwargs["parameters"]
    assert list(overrides) == [name]
    spec = SPECS_BY_NAME.get(name)
    if spec is not None:
        passed = (
            overrides[name].args[0]
            if isinstance(overrides[name], ParameterValue)
            else overrides[name]
        )
        assert type(passed) is type(spec.default), f"{name}: passed as {type(passed).__name__}"


def test_bad_boolean_argument_is_refused(start) -> None:
    with pytest.raises(ValueError, match="use_compressed"):
        start(use_compressed="yes please")


def test_remappings_follow_the_topic_arguments(start) -> None:
    node, _ = start()
    remappings = dict(node.kwargs["remappings"])
    assert sorted(remappings) == sorted(SUBSCRIPTIONS)
    assert remappings == {
        "image": "image",
        "image/compressed": "image/compressed",
        "detections": "detections",
        "prompts": "prompts",
        "clicked_point": "clicked_point",
        # rqt_image_view publishes clicks (geometry_msgs/Point) on <image topic>_mouse_left.
        "clicked_pixel": "image_mouse_left",
        "depth": "depth",
        "camera_info": "camera_info",
    }
    node, _ = start(image_topic="/camera/image_raw", detections_topic="/yolo/detections")
    remappings = dict(node.kwargs["remappings"])
    assert remappings["image"] == "/camera/image_raw"
    assert remappings["image/compressed"] == "/camera/image_raw/compressed"
    assert remappings["clicked_pixel"] == "/camera/image_raw_mouse_left"
    assert remappings["detections"] == "/yolo/detections"
    node, _ = start(clicked_pixel_topic="/viewer/click")
    assert dict(node.kwargs["remappings"])["clicked_pixel"] == "/viewer/click"


def test_node_name_namespace_log_level(start) -> None:
    node, rviz = start()
    assert node.kwargs["executable"] == EXECUTABLE
    assert node.kwargs["name"] == NODE_NAME
    assert node.kwargs["namespace"] == ""
    assert node.kwargs["output"] == "screen"
    assert node.kwargs["arguments"] == ["--ros-args", "--log-level", "info"]
    node, rviz = start(namespace="cam1", log_level="debug")
    assert node.kwargs["namespace"] == "cam1"
    assert node.kwargs["arguments"][-1] == "debug"
    # rviz2 in the same namespace resolves the configuration's relative topics to cam1's.
    assert rviz.kwargs["namespace"] == "cam1"


def test_another_node_name_needs_a_matching_parameter_file(start, tmp_path) -> None:
    # The shipped file names the node mobilesam: its values would silently not apply.
    with pytest.raises(ValueError, match="no block for node 'cam_seg'"):
        start(node_name="cam_seg")
    wildcard = tmp_path / "all.yaml"
    wildcard.write_text("/**:\n  ros__parameters:\n    backend: onnxruntime\n")
    node, _ = start(node_name="cam_seg", params_file=str(wildcard))
    assert node.kwargs["name"] == "cam_seg"
    assert node.kwargs["parameters"] == [str(wildcard)]


@pytest.mark.parametrize(
    ("key", "namespace", "matches"),
    [
        ("/**/mobilesam", "", True),
        ("/**/mobilesam", "cam1", True),
        ("/**/mobilesam", "robot/cam1", True),
        ("/**", "cam1", True),
        ("mobilesam", "", True),
        ("/mobilesam", "cam1", False),
        ("/cam1/mobilesam", "cam1", True),
        ("/cam*/mobilesam", "cam2", True),
        ("/cam*/mobilesam", "robot/cam2", False),
        ("/**/other", "", False),
    ],
)
def test_parameter_file_node_keys(launch_module, key, namespace, matches) -> None:
    assert launch_module.node_key_matches(key, namespace, "mobilesam") is matches


def test_dds_profile_reaches_the_node_and_rviz(start, monkeypatch) -> None:
    node, rviz = start()
    # As the README tells users: the variable their Fast DDS reads, naming the installed file.
    expected = {profile_variable(None): str(FASTDDS_PROFILE)}
    assert node.kwargs["additional_env"] == expected
    assert rviz.kwargs["additional_env"] == expected
    for distro, variable in (
        ("humble", "FASTRTPS_DEFAULT_PROFILES_FILE"),
        ("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE"),
        ("kilted", "FASTDDS_DEFAULT_PROFILES_FILE"),
        ("rolling", "FASTDDS_DEFAULT_PROFILES_FILE"),
    ):
        monkeypatch.setenv("ROS_DISTRO", distro)
        node, _ = start()
        assert node.kwargs["additional_env"] == {variable: str(FASTDDS_PROFILE)}, distro
        assert profile_variable(distro) == variable
    node, rviz = start(dds_profile="")
    assert node.kwargs["additional_env"] == {} and rviz.kwargs["additional_env"] == {}
    with pytest.raises(FileNotFoundError, match="dds_profile"):
        start(dds_profile="/nonexistent/fastdds.xml")


def test_rviz_starts_only_when_requested(start) -> None:
    _, rviz = start()
    assert isinstance(rviz.kwargs["condition"], IfCondition)
    assert rviz.kwargs["condition"].args == ("false",)
    _, rviz = start(rviz="true")
    assert rviz.kwargs["condition"].args == ("true",)
    assert rviz.kwargs["arguments"] == ["-d", str(RVIZ_FILE)]


# --- Parameter file -------------------------------------------------------------------------


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings as dotted parameter names, the way rcl reads parameter files."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@pytest.fixture(scope="module")
def yaml_parameters() -> dict[str, Any]:
    document = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    assert list(document) == [PARAMS_FILE_NODE_KEY], (
        f"expected one block for {PARAMS_FILE_NODE_KEY!r}, found {list(document)}"
    )
    block = document[PARAMS_FILE_NODE_KEY]
    assert list(block) == ["ros__parameters"]
    parameters = dict(block["ros__parameters"])
    for group in NON_SPEC_PARAMETER_GROUPS:
        parameters.pop(group, None)
    return flatten(parameters)


def test_parameter_file_lists_every_parameter(yaml_parameters: dict[str, Any]) -> None:
    missing = sorted(set(SPECS_BY_NAME) - set(yaml_parameters))
    unknown = sorted(set(yaml_parameters) - set(SPECS_BY_NAME))
    assert not missing, f"parameters of parameters.py missing from config/seg.yaml: {missing}"
    assert not unknown, f"config/seg.yaml sets parameters that parameters.py lacks: {unknown}"


@pytest.mark.parametrize("spec", PARAMETERS, ids=[spec.name for spec in PARAMETERS])
def test_parameter_file_value_is_the_default(
    yaml_parameters: dict[str, Any], spec: ParameterSpec
) -> None:
    if spec.name not in yaml_parameters:
        pytest.fail(f"{spec.name} missing from config/seg.yaml")
    value = yaml_parameters[spec.name]
    # The type matters: rcl declares 30 as an integer and 30.0 as a double, and a parameter
    # declared as a double refuses an integer.
    assert type(value) is type(spec.default), (
        f"{spec.name}: {value!r} is {type(value).__name__} in config/seg.yaml, "
        f"{type(spec.default).__name__} in parameters.py"
    )
    assert value == spec.default, (
        f"{spec.name}: {value!r} in config/seg.yaml, {spec.default!r} in parameters.py"
    )
    if spec.choices:
        assert value in spec.choices
    if spec.min_value is not None:
        assert value >= spec.min_value
    if spec.max_value is not None:
        assert value <= spec.max_value


# --- rviz configuration ---------------------------------------------------------------------


def test_rviz_config_shows_the_images_cloud_and_markers() -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text(encoding="utf-8"))
    manager = config["Visualization Manager"]
    fixed_frame = manager["Global Options"]["Fixed Frame"]
    assert isinstance(fixed_frame, str) and fixed_frame
    displays = {display["Topic"]["Value"]: display for display in manager["Displays"]}
    for topic, display_class in RVIZ_DISPLAYS.items():
        assert topic in displays, (
            f"no display on {topic} (relative: rviz2 runs in the node's namespace)"
        )
        display = displays[topic]
        assert display["Class"] == display_class
        assert display["Enabled"] is True
        assert display["Name"]
        # Either policy matches the node's reliable image publishers.
        assert display["Topic"]["Reliability Policy"] in ("Reliable", "Best Effort")
        assert display["Topic"]["Depth"] >= 1


# --- DDS profiles ---------------------------------------------------------------------------


def test_fastdds_profile_holds_the_large_image_transports() -> None:
    root = ElementTree.parse(FASTDDS_PROFILE).getroot()
    namespace = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    descriptors = {
        d.findtext("p:transport_id", namespaces=namespace): d
        for d in root.iterfind("p:transport_descriptors/p:transport_descriptor", namespace)
    }
    types_by_id = {
        name: d.findtext("p:type", namespaces=namespace) for name, d in descriptors.items()
    }
    assert sorted(types_by_id.values()) == ["SHM", "UDPv4"]
    shm = next(
        d for d in descriptors.values() if d.findtext("p:type", namespaces=namespace) == "SHM"
    )
    udp = next(
        d for d in descriptors.values() if d.findtext("p:type", namespaces=namespace) == "UDPv4"
    )
    # Two 1920x1080 bgr8 frames fit one segment.
    assert int(shm.findtext("p:segment_size", namespaces=namespace)) >= 2 * 1920 * 1080 * 3
    for name in ("sendBufferSize", "receiveBufferSize"):
        assert int(udp.findtext(f"p:{name}", namespaces=namespace)) == 4 * 1024 * 1024
    participants = root.findall("p:participant", namespace)
    assert len(participants) == 1
    participant = participants[0]
    assert participant.get("is_default_profile") == "true"  # what rmw_fastrtps loads
    rtps = participant.find("p:rtps", namespace)
    assert rtps.findtext("p:useBuiltinTransports", namespaces=namespace) == "false"
    used = [e.text for e in rtps.iterfind("p:userTransports/p:transport_id", namespace)]
    assert sorted(used) == sorted(descriptors)


def test_cyclonedds_config_holds_buffer_and_fragment_sizes() -> None:
    root = ElementTree.parse(CYCLONEDDS_CONFIG).getroot()
    namespace = {"c": "https://cdds.io/config"}
    assert root.tag == "{https://cdds.io/config}CycloneDDS"
    domain = root.find("c:Domain", namespace)
    assert domain.get("Id") == "any"
    buffer = domain.find("c:Internal/c:SocketReceiveBufferSize", namespace)
    assert buffer.get("min") == "4MiB"
    assert domain.findtext("c:General/c:MaxMessageSize", namespaces=namespace) == "65500B"
    assert domain.findtext("c:General/c:FragmentSize", namespaces=namespace) == "65000B"


# --- Installation ---------------------------------------------------------------------------


def test_cmake_installs_launch_and_config() -> None:
    text = re.sub(r"#[^\n]*", "", CMAKE_FILE.read_text(encoding="utf-8"))
    installs = re.findall(r"install\s*\(\s*DIRECTORY\b([^)]*)\)", text)
    installed: set[str] = set()
    for arguments in installs:
        words = arguments.split()
        if "DESTINATION" not in words:
            continue
        destination = words[words.index("DESTINATION") + 1]
        if destination.strip('"') == "share/${PROJECT_NAME}":
            installed.update(word.strip('"/') for word in words[: words.index("DESTINATION")])
    assert {"launch", "config"} <= installed, (
        "CMakeLists.txt must install launch/ and config/ to share/${PROJECT_NAME}"
    )


def test_readme_lists_every_launch_argument(declared) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Launch arguments") :]
    section = section[: section.index("\n### ", 1)]
    missing = [name for name in declared if f"`{name}`" not in section]
    assert not missing, f"launch arguments missing from the README's table: {missing}"
