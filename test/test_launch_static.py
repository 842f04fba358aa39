"""Static checks of launch/seg.launch.py, config/seg.yaml and config/seg.rviz.

`launch` and `launch_ros` are not importable here, so the launch file is read as Python source
with `ast` and never run. The parameter file and the launch defaults are compared with
mobilesam_ros/ros/parameters.py, the single source of the node's parameters: a parameter added
there without config/seg.yaml, or a default changed in one place only, fails these tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mobilesam_ros.ros.parameters import NODE_NAME, PARAMETERS, ParameterSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "seg.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "seg.yaml"
RVIZ_FILE = REPO_ROOT / "config" / "seg.rviz"
CMAKE_FILE = REPO_ROOT / "CMakeLists.txt"

PACKAGE = "mobilesam_ros"
EXECUTABLE = "seg_node"
# The node's relative subscription names, which the launch file remaps.
SUBSCRIPTIONS = ("image", "image/compressed", "detections", "prompts", "clicked_point")
# Publications shown by the rviz configuration.
RVIZ_IMAGE_TOPICS = ("/overlay", "/mask_image")
# A node named NODE_NAME in any namespace: the launch file has a namespace argument, and a plain
# NODE_NAME key would only match the node in the root namespace.
PARAMS_FILE_NODE_KEY = f"/**/{NODE_NAME}"
# Entries of ros__parameters that are not node parameters of PARAMETERS.
NON_SPEC_PARAMETER_GROUPS = ("qos_overrides",)
LAUNCH_ARGUMENTS = (
    "image_topic",
    "detections_topic",
    "prompts_topic",
    "clicked_point_topic",
    "namespace",
    "params_file",
    "backend",
    "checkpoint",
    "log_level",
    "rviz",
)

SPECS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


# --- Reading the launch file ----------------------------------------------------------------


def call_name(node: ast.AST) -> str | None:
    """`Node` for both `Node(...)` and `launch_ros.actions.Node(...)`; None if not a call."""
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == name:
            return item.value
    return None


def string_constant(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class LaunchSource:
    """The parsed launch file, with local names resolved to the expression assigned to them."""

    def __init__(self, path: Path) -> None:
        self.text = path.read_text(encoding="utf-8")
        self.tree = ast.parse(self.text, filename=str(path))
        self.assignments: dict[str, ast.expr] = {}
        reassigned: set[str] = set()
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                name = node.targets[0].id
                if name in self.assignments:
                    reassigned.add(name)
                self.assignments[name] = node.value
        # A name bound twice cannot be resolved statically.
        for name in reassigned:
            del self.assignments[name]

    def resolve(self, node: ast.expr | None) -> ast.expr | None:
        seen: set[str] = set()
        while isinstance(node, ast.Name) and node.id in self.assignments and node.id not in seen:
            seen.add(node.id)
            node = self.assignments[node.id]
        return node

    def calls(self, name: str) -> list[ast.Call]:
        return [node for node in ast.walk(self.tree) if call_name(node) == name]

    def launch_configuration(self, node: ast.expr | None) -> str | None:
        """The argument name of `LaunchConfiguration("name")`, else None."""
        node = self.resolve(node)
        if call_name(node) != "LaunchConfiguration":
            return None
        assert isinstance(node, ast.Call)
        return string_constant(self.resolve(node.args[0])) if node.args else None

    def string(self, node: ast.expr | None) -> str | None:
        return string_constant(self.resolve(node))


@pytest.fixture(scope="module")
def launch_source() -> LaunchSource:
    return LaunchSource(LAUNCH_FILE)


@pytest.fixture(scope="module")
def declared_arguments(launch_source: LaunchSource) -> dict[str, ast.Call]:
    arguments: dict[str, ast.Call] = {}
    for call in launch_source.calls("DeclareLaunchArgument"):
        name_node = call.args[0] if call.args else keyword(call, "name")
        name = launch_source.string(name_node)
        assert name, f"line {call.lineno}: DeclareLaunchArgument without a literal name"
        assert name not in arguments, f"launch argument {name!r} declared twice"
        arguments[name] = call
    return arguments


@pytest.fixture(scope="module")
def segmentation_node(launch_source: LaunchSource) -> ast.Call:
    nodes = [
        call
        for call in launch_source.calls("Node")
        if launch_source.string(keyword(call, "package")) == PACKAGE
    ]
    assert len(nodes) == 1, f"expected one Node of package {PACKAGE}, found {len(nodes)}"
    return nodes[0]


def argument_default(
    launch_source: LaunchSource, declared_arguments: dict[str, ast.Call], name: str
) -> str:
    """The literal default_value of a declared launch argument."""
    assert name in declared_arguments, f"launch argument {name!r} is not declared"
    default = launch_source.string(keyword(declared_arguments[name], "default_value"))
    assert default is not None, f"launch argument {name!r} has no literal string default"
    return default


def default_text(
    launch_source: LaunchSource, declared_arguments: dict[str, ast.Call], node: ast.expr
) -> str:
    """What a substitution (or a list of them) gives when every argument keeps its default."""
    node = launch_source.resolve(node)
    if isinstance(node, ast.List | ast.Tuple):
        return "".join(default_text(launch_source, declared_arguments, item) for item in node.elts)
    text = string_constant(node)
    if text is not None:
        return text
    argument = launch_source.launch_configuration(node)
    assert argument is not None, f"line {node.lineno}: cannot evaluate {ast.unparse(node)}"
    return argument_default(launch_source, declared_arguments, argument)


def launch_text(value: bool | int | float | str) -> str:
    """A parameter default written as a launch argument (launch arguments are strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_installed_share_path(
    launch_source: LaunchSource, node: ast.expr | None, *parts: str
) -> bool:
    """True for PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])."""
    node = launch_source.resolve(node)
    if call_name(node) != "PathJoinSubstitution":
        return False
    assert isinstance(node, ast.Call)
    elements = launch_source.resolve(node.args[0]) if node.args else None
    if not isinstance(elements, ast.List | ast.Tuple) or not elements.elts:
        return False
    package = launch_source.resolve(elements.elts[0])
    if call_name(package) != "FindPackageShare":
        return False
    assert isinstance(package, ast.Call)
    if not package.args or launch_source.string(package.args[0]) != PACKAGE:
        return False
    return [launch_source.string(item) for item in elements.elts[1:]] == list(parts)


# --- Launch file ----------------------------------------------------------------------------


def test_launch_file_compiles(launch_source: LaunchSource) -> None:
    compile(launch_source.text, str(LAUNCH_FILE), "exec")
    functions = {node.name for node in launch_source.tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def test_launch_arguments_are_declared_with_descriptions(
    launch_source: LaunchSource, declared_arguments: dict[str, ast.Call]
) -> None:
    missing = sorted(set(LAUNCH_ARGUMENTS) - set(declared_arguments))
    assert not missing, f"launch arguments not declared: {missing}"
    for name, call in declared_arguments.items():
        description = launch_source.string(keyword(call, "description"))
        assert description and description.strip(), f"launch argument {name!r}: no description"
        assert keyword(call, "default_value") is not None, f"launch argument {name!r}: no default"


def test_every_launch_configuration_is_declared(
    launch_source: LaunchSource, declared_arguments: dict[str, ast.Call]
) -> None:
    used = {
        launch_source.launch_configuration(call)
        for call in launch_source.calls("LaunchConfiguration")
    }
    assert None not in used, "LaunchConfiguration without a literal argument name"
    undeclared = sorted(used - set(declared_arguments))
    assert not undeclared, f"LaunchConfiguration of undeclared arguments: {undeclared}"


def test_launch_argument_defaults(
    launch_source: LaunchSource, declared_arguments: dict[str, ast.Call]
) -> None:
    def default(name: str) -> str:
        return argument_default(launch_source, declared_arguments, name)

    assert default("namespace") == ""
    assert default("log_level") == "info"
    assert default("rviz") == "false"
    params_file_default = keyword(declared_arguments["params_file"], "default_value")
    assert is_installed_share_path(launch_source, params_file_default, "config", "seg.yaml"), (
        "params_file must default to the installed config/seg.yaml"
    )


def test_node_executable_name_and_namespace(
    launch_source: LaunchSource, segmentation_node: ast.Call
) -> None:
    assert launch_source.string(keyword(segmentation_node, "executable")) == EXECUTABLE
    assert launch_source.string(keyword(segmentation_node, "name")) == NODE_NAME
    namespace = keyword(segmentation_node, "namespace")
    assert launch_source.launch_configuration(namespace) == "namespace"
    assert launch_source.string(keyword(segmentation_node, "output")) == "screen"


def test_node_log_level_argument(launch_source: LaunchSource, segmentation_node: ast.Call) -> None:
    arguments = launch_source.resolve(keyword(segmentation_node, "arguments"))
    assert isinstance(arguments, ast.List | ast.Tuple), "Node arguments must be a literal list"
    items = arguments.elts
    texts = [launch_source.string(item) for item in items]
    assert "--ros-args" in texts
    level_flag = texts.index("--log-level")
    assert texts.index("--ros-args") < level_flag
    assert launch_source.launch_configuration(items[level_flag + 1]) == "log_level"


def test_node_parameters_follow_parameter_specs(
    launch_source: LaunchSource,
    declared_arguments: dict[str, ast.Call],
    segmentation_node: ast.Call,
) -> None:
    parameters = launch_source.resolve(keyword(segmentation_node, "parameters"))
    assert isinstance(parameters, ast.List | ast.Tuple), "Node parameters must be a literal list"
    entries = [launch_source.resolve(item) for item in parameters.elts]
    assert launch_source.launch_configuration(entries[0]) == "params_file", (
        "the parameter file must come first, so that the launch arguments override it"
    )
    overrides: dict[str, ast.expr] = {}
    for entry in entries[1:]:
        assert isinstance(entry, ast.Dict), f"line {entry.lineno}: expected a literal dict"
        for key, value in zip(entry.keys, entry.values, strict=True):
            name = launch_source.string(key)
            assert name is not None, f"line {entry.lineno}: parameter names must be literals"
            overrides[name] = value
    assert {"backend", "checkpoint"} <= set(overrides)

    for name, value in overrides.items():
        assert name in SPECS_BY_NAME, f"launch file sets unknown parameter {name!r}"
        spec = SPECS_BY_NAME[name]
        value = launch_source.resolve(value)
        if call_name(value) == "ParameterValue":
            assert isinstance(value, ast.Call)
            value_type = keyword(value, "value_type")
            assert isinstance(value_type, ast.Name), f"{name}: ParameterValue without value_type"
            assert value_type.id == type(spec.default).__name__, (
                f"{name}: value_type {value_type.id} but the parameter is "
                f"{type(spec.default).__name__}"
            )
            value = value.args[0]
        argument = launch_source.launch_configuration(value)
        assert argument is not None, f"{name}: expected a LaunchConfiguration"
        default = argument_default(launch_source, declared_arguments, argument)
        assert default == launch_text(spec.default), (
            f"launch argument {argument!r} defaults to {default!r}, but parameter {name!r} "
            f"defaults to {spec.default!r} in parameters.py"
        )
        if spec.choices:
            assert default in spec.choices


def test_remappings_cover_the_subscriptions(
    launch_source: LaunchSource,
    declared_arguments: dict[str, ast.Call],
    segmentation_node: ast.Call,
) -> None:
    remappings = launch_source.resolve(keyword(segmentation_node, "remappings"))
    assert isinstance(remappings, ast.List | ast.Tuple), "Node remappings must be a literal list"
    sources: list[str] = []
    for rule in remappings.elts:
        rule = launch_source.resolve(rule)
        assert isinstance(rule, ast.Tuple) and len(rule.elts) == 2, "expected (from, to) pairs"
        source = launch_source.string(rule.elts[0])
        assert source is not None, f"line {rule.lineno}: remapping source must be a literal"
        sources.append(source)
        # With every argument at its default, each remapping is the identity.
        target = default_text(launch_source, declared_arguments, rule.elts[1])
        assert target == source, f"{source!r} is remapped to {target!r} by default"
    assert sorted(sources) == sorted(SUBSCRIPTIONS)


def test_rviz_starts_only_when_requested(launch_source: LaunchSource) -> None:
    rviz_nodes = [
        call
        for call in launch_source.calls("Node")
        if launch_source.string(keyword(call, "package")) == "rviz2"
    ]
    assert len(rviz_nodes) == 1
    rviz = rviz_nodes[0]
    condition = launch_source.resolve(keyword(rviz, "condition"))
    assert call_name(condition) == "IfCondition"
    assert isinstance(condition, ast.Call)
    assert launch_source.launch_configuration(condition.args[0]) == "rviz"
    arguments = launch_source.resolve(keyword(rviz, "arguments"))
    assert isinstance(arguments, ast.List | ast.Tuple)
    assert launch_source.string(arguments.elts[0]) == "-d"
    assert is_installed_share_path(launch_source, arguments.elts[1], "config", "seg.rviz")


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


def test_rviz_config_shows_overlay_and_mask_image() -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text(encoding="utf-8"))
    manager = config["Visualization Manager"]
    fixed_frame = manager["Global Options"]["Fixed Frame"]
    assert isinstance(fixed_frame, str) and fixed_frame
    images = {
        display["Topic"]["Value"]: display
        for display in manager["Displays"]
        if display["Class"] == "rviz_default_plugins/Image"
    }
    for topic in RVIZ_IMAGE_TOPICS:
        assert topic in images, f"no Image display on {topic}"
        display = images[topic]
        assert display["Enabled"] is True
        assert display["Name"]
        # Either policy matches the node's reliable image publishers.
        assert display["Topic"]["Reliability Policy"] in ("Reliable", "Best Effort")
        assert display["Topic"]["Depth"] >= 1


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
