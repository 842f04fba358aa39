"""ONNX graphs: interface, determinism, caching, and a runtime path free of PyTorch."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from mobilesam_ros.core.errors import BackendUnavailableError  # noqa: E402
from mobilesam_ros.core.model import export  # noqa: E402


@pytest.fixture(scope="module")
def models(segmenters, random_checkpoint, cache_dir):
    # The test run's onnxruntime Segmenter has exported these already; this finds them.
    return export.export_onnx(random_checkpoint, cache_dir, progress=False)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_encoder_graph_is_static(models):
    graph = onnx.load(str(models.encoder)).graph
    assert [(i.name, _dims(i)) for i in graph.input] == [("image", [1, 3, 1024, 1024])]
    assert [(o.name, _dims(o)) for o in graph.output] == [("image_embeddings", [1, 256, 64, 64])]
    # No shape arithmetic left for the runtime to evaluate.
    assert not [n.op_type for n in graph.node if n.op_type in ("Shape", "Range", "NonZero")]


@pytest.mark.parametrize("multimask", [False, True])
def test_decoder_graph_interface(models, multimask):
    graph = onnx.load(str(models.decoder(multimask))).graph
    inputs = {i.name: _dims(i) for i in graph.input}
    assert inputs == {
        "image_embeddings": [1, 256, 64, 64],
        "point_coords": ["num_prompts", "num_points", 2],
        "point_labels": ["num_prompts", "num_points"],
        "mask_input": ["num_masks", 1, 256, 256],
        "has_mask_input": ["num_masks"],
    }
    float32 = onnx.TensorProto.FLOAT
    assert all(i.type.tensor_type.elem_type == float32 for i in graph.input)
    outputs = {o.name: _dims(o) for o in graph.output}
    k = 3 if multimask else 1
    assert outputs == {
        "low_res_masks": ["num_prompts", k, 256, 256],
        "iou_predictions": ["num_prompts", k],
    }


@pytest.mark.slow
def test_export_runs_in_a_child_process_and_is_deterministic(models, random_checkpoint, tmp_path):
    # A fresh interpreter exports again: the graphs are byte for byte the same, and the
    # exporting process never imports PyTorch itself (the child does, then exits).
    script = textwrap.dedent(f"""
        import sys
        from mobilesam_ros.core.model.export import export_onnx
        export_onnx({str(random_checkpoint)!r}, {str(tmp_path)!r}, progress=True)
        loaded = [m for m in ("torch", "onnx", "torchvision") if m in sys.modules]
        assert not loaded, loaded
    """)
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert child.returncode == 0, child.stderr
    assert "[3/3] decoder (multimask) done" in child.stderr  # progress reaches the user
    again = export.OnnxModels.in_directory(tmp_path / "onnx" / models.directory.name)
    for first, second in [
        (models.encoder, again.encoder),
        (models.decoder_single, again.decoder_single),
        (models.decoder_multi, again.decoder_multi),
    ]:
        assert first.read_bytes() == second.read_bytes(), first.name


def test_failed_export_raises_the_child_error(tmp_path):
    from mobilesam_ros.core.errors import CheckpointError

    damaged = tmp_path / "mobile_sam.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"ONNX export of mobile_sam\.pt failed: .*mobile_sam"
    ):
        export.export_onnx(damaged, tmp_path, progress=False)
    assert not list((tmp_path / "onnx").glob("*/*.onnx"))


@pytest.mark.parametrize(
    ("returncode", "report", "error", "message"),
    [
        (
            1,
            '{"type": "ImportError", "message": "No module named \'torch\'"}\n',
            "BackendUnavailableError",
            r"needs PyTorch.*No module named 'torch'",
        ),
        (
            1,
            '{"type": "RuntimeError", "message": "out of memory"}\n',
            "ExportError",
            "failed: out of memory",
        ),
        (-9, "", "ExportError", "exit code -9 and no error report"),
    ],
)
def test_child_failures_become_package_errors(
    random_checkpoint, tmp_path, monkeypatch, returncode, report, error, message
):
    from mobilesam_ros.core import errors

    class FinishedChild:
        """Stands in for the export's Popen: progress on stderr, the report on stdout."""

        def __init__(self, command, **kwargs):
            self.stderr = iter(["[1/3] exporting encoder ...\n"])
            self.stdout = io.StringIO(report)
            self.returncode = returncode

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(export.subprocess, "Popen", FinishedChild)
    with pytest.raises(getattr(errors, error), match=message):
        export.export_onnx(random_checkpoint, tmp_path, progress=False)


def test_export_is_cached_by_checkpoint_hash(models, random_checkpoint, cache_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("exported again although cached")

    monkeypatch.setattr(export, "_export_in_child_process", fail)
    assert export.export_onnx(random_checkpoint, cache_dir) == models
    key = export.export_key(export.file_sha256(random_checkpoint))
    assert models.directory.name == key and key.endswith(f"-v{export.EXPORT_FORMAT_VERSION}")


def test_decoder_batches_any_number_of_prompts(models):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(models.decoder_single), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64), dtype=np.float32)
    for num_prompts, num_points in [(1, 2), (5, 3), (17, 1)]:
        labels = rng.integers(0, 2, (num_prompts, num_points)).astype(np.float32)
        masks, iou = session.run(
            None,
            {
                "image_embeddings": embedding,
                "point_coords": rng.uniform(0, 1024, (num_prompts, num_points, 2)).astype(
                    np.float32
                ),
                "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
            },
        )
        assert masks.shape == (num_prompts, 1, 256, 256) and iou.shape == (num_prompts, 1)


def test_onnxruntime_path_does_not_import_torch(models, random_checkpoint, cache_dir):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from mobilesam_ros.core import Segmenter
        seg = Segmenter({str(random_checkpoint)!r}, backend="onnxruntime",
                        cache_dir={str(cache_dir)!r}, device="cpu", progress=False)
        result = seg.segment(np.zeros((40, 50, 3), np.uint8), boxes=[[5, 5, 30, 30]])
        assert result.masks.shape == (1, 40, 50)
        loaded = [m for m in ("torch", "segment_anything", "torchvision") if m in sys.modules]
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_missing_export_dependencies_are_named(random_checkpoint, tmp_path, monkeypatch):
    """Without PyTorch or segment_anything the first start says what to install."""
    real_find_spec = export.importlib.util.find_spec
    absent = {"torch", "segment_anything"}
    monkeypatch.setattr(
        export.importlib.util,
        "find_spec",
        lambda name, *args: None if name in absent else real_find_spec(name, *args),
    )
    with pytest.raises(BackendUnavailableError) as raised:
        export.export_onnx(random_checkpoint, tmp_path, progress=False)
    message = str(raised.value)
    assert "pip install torch 'segment-anything==1.0'" in message
    assert "requirements/ros.txt" in message
    assert not list(tmp_path.rglob("*.onnx"))
