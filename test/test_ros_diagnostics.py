"""The node's health rules (diagnostics level and message), without a running node."""

from __future__ import annotations

from collections import Counter

import pytest

diagnostic_msgs = pytest.importorskip("diagnostic_msgs.msg")
DiagnosticStatus = diagnostic_msgs.DiagnosticStatus

from mobilesam_ros.core.stream.frame_sync import DROP_TIMEOUT  # noqa: E402
from mobilesam_ros.ros.diagnostics import LOST_IMAGES_HINT, health  # noqa: E402


def state(**changes):
    arguments = {
        "loading_error": None,
        "model_ready": True,
        "failing": False,
        "seconds_since_image": 0.1,
        "stale_after": 2.0,
        "counters": Counter(),
        "previous_counters": Counter(),
    }
    arguments.update(changes)
    result = health(**arguments)
    return result.level, result.message


def test_ready_loading_and_errors():
    assert state() == (DiagnosticStatus.OK, "ready")
    assert state(model_ready=False, seconds_since_image=None) == (
        DiagnosticStatus.OK,
        "loading model",
    )
    level, message = state(loading_error="no such file")
    assert level == DiagnosticStatus.ERROR and "no such file" in message
    assert state(failing=True)[0] == DiagnosticStatus.ERROR


def test_stale_input_warns():
    level, message = state(seconds_since_image=3.0)
    assert level == DiagnosticStatus.WARN and "3.0 s" in message
    assert state(seconds_since_image=None)[1] == "no image received yet"


def test_prompts_without_images_name_the_likely_cause():
    level, message = state(counters=Counter({DROP_TIMEOUT: 4}), previous_counters=Counter())
    assert level == DiagnosticStatus.WARN and message == LOST_IMAGES_HINT
    assert "Camera frames lost?" in message
    other = state(counters=Counter(prompts_rejected=1), previous_counters=Counter())
    assert other == (DiagnosticStatus.WARN, "inputs dropped or rejected since the last report")
    unchanged = Counter({DROP_TIMEOUT: 4})
    assert state(counters=unchanged, previous_counters=Counter(unchanged))[0] == DiagnosticStatus.OK
