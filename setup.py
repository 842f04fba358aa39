"""pip install of the ROS-free library and the `mobilesam-ros` CLI (no ROS needed).

The ROS 2 package itself (messages, node, launch files) is built by colcon from CMakeLists.txt.
"""

from setuptools import find_packages, setup

setup(
    name="mobilesam-ros",
    version="0.1.0",
    description="MobileSAM segmentation for ROS 2: ROS-free inference core and CLI",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mobilesam_ros", "mobilesam_ros.*"]),
    # The TensorRT self-check's photo (mobilesam_ros/data is a data folder, not a package).
    # vision_msgs' definitions: the bag tools write and read them without a ROS install.
    package_data={"mobilesam_ros": ["data/*.jpg", "data/*.md", "data/vision_msgs/msg/*.msg"]},
    install_requires=[
        "numpy>=1.22",
        "opencv-python-headless>=4.6",
        # SAM's own resize (bilinear, antialiased): pre-processing matches the official model.
        "pillow>=9.0",
        "onnxruntime>=1.16",
        # Intel CPUs (FP32, BF16 with AMX) and GPUs; backend auto takes it on an x86 CPU.
        "openvino>=2024.0; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
        "tqdm>=4.60",
    ],
    extras_require={
        # process-bag (rosbags reads and writes recordings without ROS; --coco) and process-bags.
        "bags": ["rosbags>=0.11", "pycocotools>=2.0.7"],
        "fleet": ["rosbags>=0.11", "pycocotools>=2.0.7", "ray>=2.9"],
        # Export of the ONNX graphs and the torch backend.
        "torch": ["torch>=2.1", "torchvision", "segment-anything==1.0", "onnx>=1.14"],
        # TensorRT itself comes from JetPack (Jetson) or `pip install tensorrt` (desktops);
        # these are what the backend needs beside it. cuda-python 13 needs driver >= 580.
        "tensorrt": ["cuda-python>=13", "onnx>=1.14", "onnxconverter-common>=1.14"],
        # JetPack 6 (CUDA 12.2 / 12.6 driver), as requirements/jetpack6.txt: cuda-python 12.9
        # and later link their CUDA runtime statically, which this driver refuses; 12.6
        # implements the runtime API over the driver's.
        "tensorrt-jp6": ["cuda-python>=12.6,<12.7", "onnx>=1.14", "onnxconverter-common>=1.14"],
        # RTX desktop GPUs without full TensorRT: TensorRT-RTX from pip (CUDA 13 driver).
        "tensorrt-rtx": [
            "tensorrt-rtx-cu13-bindings>=1.7",
            "tensorrt-rtx-cu13-libs>=1.7",
            "cuda-python>=13",
            "onnx>=1.14",
            "onnxconverter-common>=1.14",
        ],
    },
    entry_points={"console_scripts": ["mobilesam-ros = mobilesam_ros.cli:main"]},
)
