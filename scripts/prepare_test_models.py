"""Write the tests' random-weight checkpoint and export its ONNX graphs into one folder.

Environments without PyTorch (the Python 3.10 core tests) cannot make either; they read this
folder instead (MOBILESAM_ROS_TEST_MODELS, see test/conftest.py). The checkpoint is the one the
tests make themselves (seed 0), so the graphs are the same. Nothing is redone when the folder
already holds both.

Usage: python scripts/prepare_test_models.py FOLDER   (in an environment with PyTorch and onnx)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilesam_ros.core.model.export import export_onnx
from mobilesam_ros.core.model.modules import write_random_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where mobile_sam.pt and cache/ go")
    folder = parser.parse_args().folder
    checkpoint = folder / "mobile_sam.pt"
    if not checkpoint.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_random_checkpoint(checkpoint, seed=0)
    models = export_onnx(checkpoint, folder / "cache", progress=False)  # cached: once
    print(f"[test-models] {checkpoint} and its graphs in {models.directory}")


if __name__ == "__main__":
    main()
