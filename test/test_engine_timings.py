"""benchmarks/engine_timings with stand-ins for the TensorRT package's public functions: which
figures each phase prints, in what order it uses the GPU, and how it fails without one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import engine_timings
from mobilesam_ros.core.backends.tensorrt import backend as backend_module
from mobilesam_ros.core.backends.tensorrt import engine_set
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    DEFAULT_MAX_PROMPTS,
    GRAPHS,
    EngineCacheError,
)
from mobilesam_ros.core.errors import BackendUnavailableError
from mobilesam_ros.core.model import export

ENGINES = SimpleNamespace(
    engines={graph: b"\0" * (3 << 20) for graph in GRAPHS},
    metadata={
        graph: {
            "build_seconds": 41.5,
            "fp32_level": 1,
            "self_check_iou": 0.9931,
            "self_check_min_iou": 0.98,
            "self_check_history": [{"fp32_level": 0, "iou": 0.95}, {"fp32_level": 1, "iou": 0.99}],
        }
        for graph in GRAPHS
    },
)


class FakeApi:
    label, name = "TensorRT 10.3.0", "TensorRT"

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.trt = SimpleNamespace(Runtime=self.runtime)

    def logger(self, verbose: bool) -> object:
        return object()

    def runtime(self, logger: object) -> SimpleNamespace:
        def deserialize(data: bytes) -> SimpleNamespace:
            self.events.append("deserialize")
            return SimpleNamespace(create_execution_context=object)

        return SimpleNamespace(deserialize_cuda_engine=deserialize)


class FakeBackend:
    def __init__(self, engines, profile, device, precision) -> None:
        self.events: list[str] = []

    def encode(self, image: np.ndarray) -> str:
        assert image.shape == (1, 3, 1024, 1024)
        self.events.append("encode")
        return "embedding"

    def decode(self, embedding, inputs, multimask: bool) -> None:
        assert embedding == "embedding" and len(inputs) == 10  # --boxes
        self.events.append(f"decode multimask={multimask}")

    def describe(self) -> str:
        return "tensorrt (TensorRT 10.3.0) fp16 on Orin (cuda:0)"

    def close(self) -> None:
        self.events.append("close")


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    events: list[str] = []
    api = FakeApi(events)
    target = SimpleNamespace(api=api, gpu="Orin", profile="profile")
    backends: list[FakeBackend] = []

    def make_backend(*args: object) -> FakeBackend:
        backends.append(FakeBackend(*args))
        backends[-1].events = events
        return backends[-1]

    timing_cache = tmp_path / "cache" / "tensorrt" / "timing-0123.cache"

    def ensure(target, models, cache, force_rebuild, progress):
        assert force_rebuild  # built again, whatever the cache holds
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(b"\0" * 4096)
        return ENGINES

    def specs(api, gpu, models, precision, profile):
        assert gpu == "Orin"
        return {
            graph: SimpleNamespace(timing_cache_name=lambda: timing_cache.name) for graph in GRAPHS
        }

    monkeypatch.setattr(engine_set, "open_gpu", lambda device, precision, prompts: target)
    monkeypatch.setattr(engine_set, "ensure_engines", ensure)
    monkeypatch.setattr(engine_set, "engine_specs", specs)
    monkeypatch.setattr(engine_set, "load_cached_engines", lambda *args: ENGINES)
    monkeypatch.setattr(export, "export_onnx", lambda *args, **kwargs: "models")
    monkeypatch.setattr(backend_module, "TensorRtBackend", make_backend)
    monkeypatch.setattr(engine_timings, "import_tensorrt", lambda: "tensorrt module")
    monkeypatch.setattr(engine_timings, "TrtApi", lambda module: api)
    checkpoint = tmp_path / "mobile_sam.pt"
    checkpoint.write_bytes(b"weights")
    return SimpleNamespace(events=events, checkpoint=checkpoint, cache=tmp_path / "cache")


def _run(stand_ins, *options: str) -> int:
    common = ["--checkpoint", str(stand_ins.checkpoint), "--cache-dir", str(stand_ins.cache)]
    return engine_timings.main([*options, *common])


def test_build_prints_each_graph_and_the_self_check(stand_ins, capsys, tmp_path):
    record = tmp_path / "summary.txt"
    assert _run(stand_ins, "build", "--precision", "fp32", "--record", str(record)) == 0
    printed = capsys.readouterr().out
    # The default profile is the node's: smaller on a Jetson.
    assert printed.startswith(
        f"engines rebuilt, TensorRT 10.3.0 fp32, max_prompts {DEFAULT_MAX_PROMPTS}"
    )
    for graph in GRAPHS:
        assert f"  {graph}: built in 41.5 s, 3.0 MiB, FP32 level 1" in printed
    assert (
        "self-check mask IoU 0.9931 (at least 0.98); FP32 levels tried: 0 (IoU 0.95), 1" in printed
    )
    assert "timing cache: none before (every kernel timed), 4 KiB after" in printed
    assert record.read_text() == printed
    # A second build finds the kernel timings of the first.
    assert _run(stand_ins, "build", "--max-prompts", "8") == 0
    printed = capsys.readouterr().out
    assert "max_prompts 8" in printed and "timing cache: 4 KiB before" in printed


def test_start_times_the_backend_then_first_calls_then_each_engine_alone(stand_ins, capsys):
    assert _run(stand_ins, "start", "--iterations", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("second start, tensorrt (TensorRT 10.3.0) fp16 on Orin (cuda:0): ")
    for part in ("import TensorRT", "open GPU", "read and check cached engines", "backend start"):
        assert part in lines[0]
    assert "first call against the median of the next 2 (10 boxes" in lines[1]
    assert all(f"{graph} " in lines[1] for graph in GRAPHS)
    assert "deserialized again on its own" in lines[2] and "decoder_multi" in lines[2]
    events = stand_ins.events
    # The first call of each engine, in order; each engine loaded again only after close().
    assert events[:3] == ["encode", "decode multimask=False", "decode multimask=True"]
    assert events[events.index("close") :] == ["close"] + ["deserialize"] * len(GRAPHS)


def test_start_without_cached_engines_says_to_build_them(stand_ins, monkeypatch, capsys):
    def missing(*args: object) -> None:
        raise EngineCacheError(stand_ins.cache / "encoder.engine", "no such file")

    monkeypatch.setattr(engine_set, "load_cached_engines", missing)
    assert _run(stand_ins, "start") == 2
    assert "no such file; run `engine_timings build` with the same options" in (
        capsys.readouterr().err
    )


def test_without_a_gpu_each_phase_stops_with_the_reason(stand_ins, monkeypatch, capsys):
    def no_gpu(*args: object) -> None:
        raise BackendUnavailableError("backend 'tensorrt' needs an NVIDIA GPU")

    monkeypatch.setattr(engine_set, "open_gpu", no_gpu)
    for phase in ("build", "start"):
        assert _run(stand_ins, phase) == 2
        assert f"engine timings ({phase}): backend 'tensorrt' needs" in capsys.readouterr().err


def test_a_missing_checkpoint_is_named(stand_ins, capsys):
    stand_ins.checkpoint = stand_ins.checkpoint.with_name("absent.pt")
    assert _run(stand_ins, "build") == 2
    assert "absent.pt' does not exist" in capsys.readouterr().err


def test_a_build_without_a_timing_cache_says_so(stand_ins, monkeypatch, capsys):
    monkeypatch.setattr(engine_set, "ensure_engines", lambda *args, **kwargs: ENGINES)
    assert _run(stand_ins, "build") == 0
    assert "no timing cache (TensorRT 10.3.0 keeps none)" in capsys.readouterr().out
