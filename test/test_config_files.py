"""Static checks of config/seg.yaml, config/seg.rviz, the DDS profiles and their installation.

The parameter file is compared with the settings types of mobilesam_ros/core/settings.py, the
single source of the node's parameters: a parameter added there without config/seg.yaml, or a
default changed in one place only, fails these tests. The launch file itself runs through the
real launch in test/dds/test_launch_file.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest
import yaml

from mobilesam_ros.core.settings import Setting, value_problem
from mobilesam_ros.ros.parameters import NODE_NAME, PARAMETERS

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "config" / "seg.yaml"
RVIZ_FILE = REPO_ROOT / "config" / "seg.rviz"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds.xml"
CYCLONEDDS_CONFIG = REPO_ROOT / "config" / "cyclonedds.xml"
CMAKE_FILE = REPO_ROOT / "CMakeLists.txt"

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
SPECS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


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


def commented_out(spec: Setting) -> bool:
    """A list parameter whose default is empty is shown as a comment: a parameter file's empty
    list has no type that rcl could give it."""
    text = PARAMS_FILE.read_text(encoding="utf-8")
    return spec.default == () and re.search(rf"^\s*# {spec.name}: \[", text, re.M) is not None


def test_parameter_file_lists_every_parameter(yaml_parameters: dict[str, Any]) -> None:
    shown = set(yaml_parameters) | {s.name for s in PARAMETERS if commented_out(s)}
    missing = sorted(set(SPECS_BY_NAME) - shown)
    unknown = sorted(set(yaml_parameters) - set(SPECS_BY_NAME))
    assert not missing, f"parameters of the settings types missing from config/seg.yaml: {missing}"
    assert not unknown, f"config/seg.yaml sets parameters that the settings types lack: {unknown}"


@pytest.mark.parametrize("spec", PARAMETERS, ids=[spec.name for spec in PARAMETERS])
def test_parameter_file_value_is_the_default(
    yaml_parameters: dict[str, Any], spec: Setting
) -> None:
    if spec.name not in yaml_parameters:
        if commented_out(spec):
            return
        pytest.fail(f"{spec.name} missing from config/seg.yaml")
    value = yaml_parameters[spec.name]
    # The type matters: rcl declares 30 as an integer and 30.0 as a double, and a parameter
    # declared as a double refuses an integer.
    assert type(value) is type(spec.default), (
        f"{spec.name}: {value!r} is {type(value).__name__} in config/seg.yaml, "
        f"{type(spec.default).__name__} in the settings types"
    )
    assert value == spec.default, (
        f"{spec.name}: {value!r} in config/seg.yaml, {spec.default!r} in the settings types"
    )
    assert value_problem(spec, value) is None


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
