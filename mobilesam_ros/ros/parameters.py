"""The node's parameters, derived from the settings types (`core/settings.py`): their names,
defaults, ranges, descriptions and which may change at run time; their declaration on an rclpy
node; the README's table of them.

Importable without ROS (the launch file's tests and the README check read it); rcl_interfaces
is imported only where a node declares its parameters.
"""

from __future__ import annotations

from typing import Any

from mobilesam_ros.core.settings import NodeSettings, Setting

NODE_NAME = "mobilesam"
PARAMETERS: tuple[Setting, ...] = tuple(NodeSettings.parameters())


def parameter(name: str) -> Setting:
    for item in PARAMETERS:
        if item.name == name:
            return item
    raise KeyError(name)


def declare_parameters(node: Any) -> NodeSettings:
    """Declare every parameter on an rclpy node, with its description and range, and return
    the settings they make; InvalidInputError (a MobileSamError) names the first value (from
    the command line or a file) that is refused."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for item in PARAMETERS:
        info = item.info
        descriptor = ParameterDescriptor(description=info.description, read_only=not info.dynamic)
        if info.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(info.choices)
        if info.minimum is not None and info.maximum is not None:
            if isinstance(item.default, float):
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=info.minimum, to_value=info.maximum)
                ]
            elif isinstance(item.default, int) and not isinstance(item.default, bool):
                descriptor.integer_range = [
                    IntegerRange(from_value=int(info.minimum), to_value=int(info.maximum), step=1)
                ]
        if isinstance(item.default, tuple):
            # An empty list has no type for rclpy to infer: declared as a string array that
            # a launch file or the command line may leave unset (then the default holds).
            from rclpy.parameter import Parameter

            node.declare_parameter(item.name, Parameter.Type.STRING_ARRAY, descriptor)
        else:
            node.declare_parameter(item.name, item.default, descriptor)
    return NodeSettings.from_values(lambda name: _value(node, name))


def _value(node: Any, name: str) -> Any:
    from rclpy.exceptions import ParameterUninitializedException

    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return parameter(name).default


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value) if value != "" else '""'


def accepted_values(item: Setting) -> str:
    """What a parameter takes, in words: its range, its choices or its forms."""
    info = item.info
    if info.minimum is not None and info.maximum is not None:
        return f"{info.minimum:g} to {info.maximum:g}"
    return ", ".join(info.choices) or info.forms


def launch_argument_description(name: str) -> str:
    """The description of the launch argument that sets parameter `name` when given."""
    item = parameter(name)
    accepted = accepted_values(item)
    values = f" Values: {accepted}." if accepted else ""
    return f"{item.info.description}{values} Sets parameter {name} when given."


def markdown_table() -> str:
    """The README's parameter table, made from the settings types."""
    lines = [
        "| name | default | range / values | changeable at run time | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for item in PARAMETERS:
        info = item.info
        accepted = accepted_values(item)
        changeable = "yes" if info.dynamic else "no"
        lines.append(
            f"| `{item.name}` | `{_shown(item.default)}` | {accepted} | {changeable} | "
            f"{info.description} |"
        )
    return "\n".join(lines)
