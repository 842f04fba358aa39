"""Memory benchmark: resident set size (RSS) of a Segmenter at each stage, on the CPU.

Loads a Segmenter (ONNX Runtime by default), encodes a 640x480 photo, then decodes 1, 10 and
100 box prompts on it, several times each so arenas reach their steady size, then segments the
frame whole (segment everything: a 32x32 grid, the filters off so that every one of its 3072
masks is upscaled and scored), and prints the process's RSS after every stage and its peak.
Figures are Linux /proc values in MiB.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.common import benchmark_boxes, benchmark_frame
from mobilesam_ros.tools.process_memory import peak_rss_mib, rss_mib

PROMPT_COUNTS = (1, 10, 100)
REPEATS = 2


def run_memory_benchmark(
    checkpoint: str | None,
    backend: str = "onnxruntime",
    cache_dir: str | None = None,
    decoder_memory_mb: int | None = None,
) -> dict[str, float]:
    from mobilesam_ros.core import Segmenter
    from mobilesam_ros.core.everything import segment_everything
    from mobilesam_ros.core.model.checkpoint import default_cache_dir
    from mobilesam_ros.core.settings import EverythingSettings

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if checkpoint is None:
        checkpoint = str(cache / "random-weights-seed0.pt")
        if not os.path.isfile(checkpoint):
            _write_random_checkpoint_in_child(checkpoint)
        print("checkpoint: random weights in the official layout (same memory as the real ones)")
    frame = benchmark_frame()
    results = {"imports": rss_mib()}
    options = {} if decoder_memory_mb is None else {"decoder_memory_mb": decoder_memory_mb}
    segmenter = Segmenter(checkpoint, backend, cache, device="cpu", **options)
    results["loaded"] = rss_mib()
    embedding = segmenter.encode(frame)
    results["encoded"] = rss_mib()
    for count in PROMPT_COUNTS:
        boxes = benchmark_boxes(count)
        for _ in range(REPEATS):
            segmenter.decode(embedding, boxes=boxes)
            embedding = segmenter.encode(frame)
        results[f"decoded_{count}"] = rss_mib()
    settings = EverythingSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    segment_everything(segmenter, frame, settings, embedding=embedding)
    results["everything"] = rss_mib()
    results["peak"] = peak_rss_mib()
    loaded_torch = "torch" in sys.modules
    budget = getattr(segmenter, "decoder_memory_mb", None)
    chunk = getattr(segmenter, "decode_chunk_size", segmenter.max_batch)
    print(
        f"{segmenter.backend.describe()}, decoder memory budget {budget} MB ({chunk} prompts per "
        f"decoder call); 640x480 frame; PyTorch in this process: {'yes' if loaded_torch else 'no'}"
    )
    labels = {
        "imports": "after imports",
        "loaded": "Segmenter loaded",
        "encoded": "after one encode",
        **{f"decoded_{n}": f"encode + decode {n} boxes (x{REPEATS})" for n in PROMPT_COUNTS},
        "everything": "segment everything 32x32",
        "peak": "peak (VmHWM)",
    }
    for key, label in labels.items():
        print(f"  RSS {label:<32} {results[key]:8.0f} MiB")
    return results


def _write_random_checkpoint_in_child(path: str) -> None:
    """Random weights need PyTorch; a child process writes them so this one never loads it."""
    import subprocess

    code = (
        "import sys; from mobilesam_ros.core.model.modules import write_random_checkpoint; "
        "write_random_checkpoint(sys.argv[1], seed=0)"
    )
    subprocess.run([sys.executable, "-c", code, path], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_memory", description=__doc__)
    parser.add_argument("--checkpoint", default=None, help="mobile_sam.pt (default: random)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--decoder-memory-mb", type=int, default=None, help="Segmenter decoder_memory_mb"
    )
    args = parser.parse_args(argv)
    run_memory_benchmark(args.checkpoint, args.backend, args.cache_dir, args.decoder_memory_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
