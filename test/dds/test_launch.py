"""seg.launch.py started with the real `ros2 launch`, inspected with the real `ros2` CLI, and
stopped with a terminal's Ctrl-C (SIGINT to the whole process group, then launch's own SIGINT).

Runs in the install space's environment (run_ros_tests.py): the Fast DDS profile exported as the
README tells users, loopback DDS in a domain of this process.

MOBILESAM_ROS_CTRL_C_TRIES (default 1) sets how often each Ctrl-C case runs;
MOBILESAM_ROS_CTRL_C_REPORT names a file to which each try appends one JSON line (`make
ctrl-c-check` counts them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import AUTO_CPU_BACKEND, camera_frame

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch_ros", reason="ros2 launch is not installed")
from mobilesam_ros.msg import PromptArray  # noqa: E402
from node_client import Client, box_prompt, header  # noqa: E402
from ros_cli import LaunchedSystem, ros2, ros2_until  # noqa: E402

from mobilesam_ros.core import Segmenter  # noqa: E402
from mobilesam_ros.core.model.modules import write_random_checkpoint  # noqa: E402
from mobilesam_ros.core.stream.pipeline import DROP_WHILE_LOADING  # noqa: E402
from mobilesam_ros.ros.diagnostics import LIFECYCLE_MESSAGES  # noqa: E402

NODE = "/mobilesam"
READY_LINE = r"MobileSAM ready"
TRIES = int(os.environ.get("MOBILESAM_ROS_CTRL_C_TRIES", "1"))
REPORT = os.environ.get("MOBILESAM_ROS_CTRL_C_REPORT")
FRAME = camera_frame(720, 1280)
BOXES = [(100, 80, 500, 600), (600, 100, 1100, 650), (200, 300, 900, 700)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random-weight checkpoint and a cache with its exported graphs."""
    folder = tmp_path_factory.mktemp("model")
    checkpoint = write_random_checkpoint(folder / "mobile_sam.pt")
    Segmenter(checkpoint, "onnxruntime", folder / "cache", "cpu", progress=False)
    return checkpoint, folder / "cache"


def params_file(folder: Path, checkpoint: Path, cache: Path, **extra) -> Path:
    """A params_file for the launch file, as a user writes one."""
    parameters = {
        "checkpoint": str(checkpoint),
        "cache_dir": str(cache),
        "backend": "auto",  # as users leave it: OpenVINO on x86 where installed
        "device": "cpu",
        "sync": {"max_wait": 3.0},
        **extra,
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"/**/mobilesam": {"ros__parameters": parameters}}))
    return path


def launch(tmp_path: Path, model, *arguments: str, cache: Path | None = None) -> LaunchedSystem:
    checkpoint, prepared_cache = model
    params = params_file(tmp_path, checkpoint, cache or prepared_cache)
    return LaunchedSystem(
        ["mobilesam_ros", "seg.launch.py", f"params_file:={params}", *arguments],
        env=dict(os.environ),
        cwd=tmp_path,
    )


@pytest.fixture(scope="module", autouse=True)
def ros2_daemon():
    """The `ros2` commands talk to the graph through its daemon, as on a user's machine (it keeps
    discovery between commands); started here, stopped after this module."""
    env = dict(os.environ)
    ros2("daemon", "start", env=env)
    yield
    ros2("daemon", "stop", env=env)


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    node = rclpy.create_node("launch_test_client")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


def status_of(client: Client, node: str = NODE):
    """The newest /diagnostics status of `node`, waiting for one."""

    def arrived():
        """a /diagnostics status of the node"""
        for array in reversed(client.received["diagnostics"]):
            for status in array.status:
                if status.name == f"{node}: segmentation":
                    return status
        return None

    return client.spin_until(arrived)


def wait_for_message(client: Client, message: str, timeout: float = 60.0, streaming=False):
    """The node's newest status once it says `message`; with `streaming`, small camera frames go
    out meanwhile ("ready" needs images that keep coming)."""
    frames = iter(range(10_000, 20_000))

    def arrived():
        """the node's /diagnostics to say the expected message"""
        client.received["diagnostics"].clear()
        if streaming:
            client.publish_image(header(next(frames), "warm_up"), np.zeros((48, 64, 3), np.uint8))
        status = client.spin_until(lambda: status_of(client), timeout=5.0)
        return status if status.message == message else None

    return client.spin_until(arrived, timeout=timeout)


def send_frame_and_prompts(client: Client, seconds: int):
    stamp = header(seconds)
    client.publish_image(stamp, FRAME)
    prompts = [box_prompt(f"box{i}", box) for i, box in enumerate(BOXES)]
    client.prompts_pub.publish(PromptArray(header=stamp, prompts=prompts))
    return stamp


# -- the launch file as users start it ------------------------------------------------------


def test_answers_1280x720_frames_and_the_cli_sees_and_sets_parameters(tmp_path, model, ros):
    system = launch(tmp_path, model)
    client = Client(ros)
    try:
        system.wait_for(READY_LINE)
        client.wait_for_node()  # frames flow from here on
        assert wait_for_message(client, "ready", streaming=True).hardware_id.startswith(
            AUTO_CPU_BACKEND
        )
        stamp = send_frame_and_prompts(client, 200)
        # With tracking (the default) the frame may be answered for live tracks before its
        # prompts arrive: the answer to the prompts is the one that holds them.
        prompted = {"box0", "box1", "box2"}
        answer = client.masks_for(stamp, where=lambda m: {i.id for i in m.instances} >= prompted)[0]
        assert answer.header == stamp
        assert [i.id for i in answer.instances] == ["box0", "box1", "box2"]
        overlay = client.spin_until(
            lambda: [m for m in client.received["overlay"] if m.header == stamp]
        )
        assert (overlay[0].height, overlay[0].width) == (720, 1280)

        env = dict(os.environ)
        ros2_until(lambda out: NODE in out.split(), "node", "list", env=env)
        wanted = {"/masks", "/overlay", "/image", "/prompts", "/clicked_pixel_stamped"}
        topics = ros2_until(lambda out: wanted <= set(out.split()), "topic", "list", env=env)
        assert "/clicked_point" not in topics.split()  # rviz's Publish Point: metres, not pixels
        described = ros2("param", "describe", NODE, "overlay.alpha", env=env)
        assert "Opacity" in described.stdout and "Min value: 0.0" in described.stdout
        good = ros2("param", "set", NODE, "overlay.alpha", "0.25", env=env)
        assert "Set parameter successful" in good.stdout, good.stdout
        value = ros2("param", "get", NODE, "overlay.alpha", env=env).stdout
        assert "0.25" in value
        bad = ros2("param", "set", NODE, "overlay.alpha", "2.0", env=env)
        assert "Set parameter successful" not in bad.stdout
        assert "overlay.alpha" in bad.stdout or "range" in bad.stdout.lower(), bad.stdout
        fixed = ros2("param", "set", NODE, "backend", "torch", env=env)
        assert "Set parameter successful" not in fixed.stdout  # read-only at run time
        value = ros2("param", "get", NODE, "overlay.alpha", env=env).stdout
        assert "0.25" in value
    finally:
        report = system.stop_report("seg_node")
    assert report.clean, f"{report.problems}\n{system.output}"
    assert "Fast DDS profile exported in this shell" in system.output


def test_prompts_sent_while_the_model_loads_are_counted_and_said_once(tmp_path, model, ros):
    fresh_cache = tmp_path / "fresh-cache"  # the first start exports: loading takes seconds
    system = launch(tmp_path, model, cache=fresh_cache)
    client = Client(ros)
    try:
        system.wait_for("exporting ONNX graphs")
        client.spin_until(lambda: client.prompts_pub.get_subscription_count())
        for second in range(300, 303):
            client.prompts_pub.publish(
                PromptArray(header=header(second), prompts=[box_prompt("early", BOXES[0])])
            )
        system.wait_for(READY_LINE, timeout=120)
        status = wait_for_message(client, "no image received yet")
        values = {kv.key: kv.value for kv in status.values}
        assert values["prompt messages received while the model loaded (total)"] == "3"
        # Their wait (sync.max_wait: 3 s) ended before the export did.
        assert values[DROP_WHILE_LOADING] == "3"
        assert system.output.count("prompts arrive while the model is loading") == 1
    finally:
        report = system.stop_report("seg_node")
    assert report.clean, f"{report.problems}\n{system.output}"


def test_lifecycle_launch_comes_up_active_and_stops_publishing_when_deactivated(
    tmp_path, model, ros
):
    system = launch(tmp_path, model, "lifecycle:=true")
    client = Client(ros)
    env = dict(os.environ)
    try:
        assert system.node_pid("seg_lifecycle_node") > 0
        client.wait_for_node()  # answers: configured and activated by launch
        ros2_until(lambda out: NODE in out.split(), "node", "list", env=env)
        assert "active [3]" in ros2("lifecycle", "get", NODE, env=env).stdout
        status = wait_for_message(client, "ready", streaming=True)
        assert {kv.key: kv.value for kv in status.values}["lifecycle state"] == "active"
        deactivated = ros2("lifecycle", "set", NODE, "deactivate", env=env)
        assert "Transitioning successful" in deactivated.stdout, deactivated.stdout
        status = wait_for_message(client, LIFECYCLE_MESSAGES["inactive"])
        assert {kv.key: kv.value for kv in status.values}["lifecycle state"] == "inactive"
        client.received["masks"].clear()
        client.received["overlay"].clear()
        client.prompts_pub.publish(
            PromptArray(header=header(400), prompts=[box_prompt("x", BOXES[0])])
        )
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            rclpy.spin_once(ros, timeout_sec=0.05)
        assert client.received["masks"] == [] and client.received["overlay"] == []
        cleaned = ros2("lifecycle", "set", NODE, "cleanup", env=env)
        assert "Transitioning successful" in cleaned.stdout, cleaned.stdout
        wait_for_message(client, LIFECYCLE_MESSAGES["unconfigured"])
    finally:
        report = system.stop_report("seg_lifecycle_node")
    assert report.clean, f"{report.problems}\n{system.output}"


def test_lifecycle_without_autostart_has_its_parameters_before_configure(tmp_path, model, ros):
    system = launch(tmp_path, model, "lifecycle:=true", "autostart:=false")
    client = Client(ros)
    env = dict(os.environ)
    try:
        wait_for_message(client, LIFECYCLE_MESSAGES["unconfigured"])
        ros2_until(lambda out: NODE in out.split(), "node", "list", env=env)
        assert "unconfigured [1]" in ros2("lifecycle", "get", NODE, env=env).stdout
        value = ros2("param", "get", NODE, "backend", env=env).stdout
        assert "auto" in value
        configured = ros2("lifecycle", "set", NODE, "configure", env=env)
        assert "Transitioning successful" in configured.stdout, configured.stdout
        wait_for_message(client, LIFECYCLE_MESSAGES["inactive"])
        assert client.image_pub.get_subscription_count() == 0  # inputs come with activate
    finally:
        report = system.stop_report("seg_lifecycle_node")
    assert report.clean, f"{report.problems}\n{system.output}"


# -- Ctrl-C: every phase of the node's life ------------------------------------------------


def _record(case: str, attempt: int, report) -> None:
    if REPORT:
        line = {
            "case": case,
            "try": attempt,
            "distro": os.environ.get("ROS_DISTRO", "kilted"),
            "clean": report.clean,
            "node_gone_after_s": report.node_gone_after_s,
            "launch_exit_code": report.launch_exit_code,
            "problems": report.problems,
        }
        with open(REPORT, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


CASES = ("loading", "export", "idle", "busy", "lifecycle-configure")


@pytest.mark.parametrize("attempt", range(TRIES))
@pytest.mark.parametrize("case", CASES)
def test_ctrl_c_of_ros2_launch_ends_cleanly(tmp_path, model, ros, case, attempt):
    """Ctrl-C in a terminal: SIGINT to launch and node at once, launch forwards another."""
    chance = random.Random(f"{case}-{attempt}")
    cache = None
    if case == "export":
        cache = tmp_path / "fresh-cache"
    arguments = ["lifecycle:=true"] if case == "lifecycle-configure" else []
    executable = "seg_lifecycle_node" if case == "lifecycle-configure" else "seg_node"
    system = launch(tmp_path, model, *arguments, cache=cache)
    try:
        system.node_pid(executable)
        if case == "loading":
            time.sleep(chance.uniform(0.0, 2.5))  # imports, parameters, the model's load
        elif case == "export":
            system.wait_for("exporting ONNX graphs")
            time.sleep(chance.uniform(0.0, 2.0))
        elif case == "lifecycle-configure":
            system.wait_for("loading MobileSAM")
            time.sleep(chance.uniform(0.0, 1.0))
        else:
            system.wait_for(READY_LINE)
            if case == "busy":
                client = Client(ros)
                client.wait_for_node()
                send_frame_and_prompts(client, 500 + attempt)
                time.sleep(chance.uniform(0.05, 0.3))  # the encoder takes longer on a CPU
            else:
                time.sleep(0.3)
    finally:
        report = system.stop_report(executable)
    _record(case, attempt, report)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    assert report.clean, f"{report.problems}\n{system.output}"
