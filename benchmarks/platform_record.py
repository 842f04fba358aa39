"""What scripts/gpu_check.sh records beside its figures: the platform and the tegrastats logs.

`versions`: Python and library versions, the CUDA runtime and driver versions (cuda-python's
cudart) and the GPU as CUDA reports it; whatever is missing is named, never fatal.
`probe NAME`: whether a GPU path can run here (exit status 0) or why not (printed, status 1).
`tegrastats LOG`: a Jetson's tegrastats log summarized: RAM used, GPU (GR3D_FREQ) and memory
controller (EMC_FREQ) load and clocks, temperatures, and signs of throttling (a temperature at a
passive trip point of its thermal zone, or the GPU clock falling while the GPU is busy).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import platform
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Versions and probes


def _module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # a broken install is a finding, not a reason to stop
        return f"not importable ({type(exc).__name__}: {exc})"
    return str(getattr(module, "__version__", "version unknown"))


def _torch_description() -> str:
    if importlib.util.find_spec("torch") is None:
        return "not installed"
    import torch

    cuda = torch.version.cuda or "none (CPU build)"
    return f"{torch.__version__}, CUDA build {cuda}, GPU visible: {torch.cuda.is_available()}"


def _cuda_version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10} ({version})"


def cuda_description() -> dict[str, str]:
    """CUDA runtime and driver versions and device 0, through cuda-python's cudart."""
    from mobilesam_ros.core.backends.tensorrt.compat import CudaApi, cuda_python_version
    from mobilesam_ros.core.errors import BackendUnavailableError

    found = {"cuda-python": cuda_python_version()}
    try:
        cuda = CudaApi()
        found["CUDA runtime"] = _cuda_version_text(int(cuda.call("cudaRuntimeGetVersion")))
        driver = cuda.driver_cuda_version()
        found["CUDA driver"] = _cuda_version_text(driver) if driver else "no driver loaded"
        props = cuda.call("cudaGetDeviceProperties", 0)
        name = (
            props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else props.name
        )
        found["GPU 0"] = (
            f"{str(name).strip()}, compute {props.major}.{props.minor}, "
            f"{props.multiProcessorCount} SMs, {int(props.totalGlobalMem) >> 20} MiB"
        )
    except BackendUnavailableError as exc:
        found["CUDA"] = f"not usable: {exc}"
    return found


def versions() -> dict[str, str]:
    """Library, CUDA and GPU description, one value per name."""
    found = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "machine": f"{platform.machine()}, {platform.platform()}",
        "numpy": _module_version("numpy"),
        "opencv": _module_version("cv2"),
        "onnxruntime": _module_version("onnxruntime"),
        "torch": _torch_description(),
        "triton": _module_version("triton"),
    }
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        found["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    from mobilesam_ros.core.backends.tensorrt.compat import import_tensorrt
    from mobilesam_ros.core.errors import BackendUnavailableError

    try:
        trt = import_tensorrt()
        found["tensorrt"] = f"{trt.__version__} (module {trt.__name__})"
    except BackendUnavailableError as exc:
        found["tensorrt"] = str(exc)
    found.update(cuda_description())
    return found


def _torch_cuda_problem() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed"
    import torch

    if torch.version.cuda is None:
        return f"PyTorch {torch.__version__} is a CPU build (no CUDA)"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
    return None


def _import_problem(module: str, why: str) -> Callable[[], str | None]:
    def problem() -> str | None:
        try:
            importlib.import_module(module)
        except Exception as exc:
            return f"{module} is not importable ({type(exc).__name__}: {exc}); {why}"
        return None

    return problem


def _tensorrt_problem() -> str | None:
    from mobilesam_ros.core.backends.tensorrt.compat import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


PROBES: dict[str, Callable[[], str | None]] = {
    "torch-cuda": _torch_cuda_problem,
    "triton": _import_problem(
        "triton", "torch.compile needs it (Jetson's PyTorch wheels come without it)"
    ),
    "tensorrt": _tensorrt_problem,
    "official": _import_problem(
        "mobile_sam", "the official pipeline to compare with (pip install mobilesam-mirror)"
    ),
    "pytest": _import_problem("pytest", "the tests need it"),
}


# ---------------------------------------------------------------------------------------------
# tegrastats

_TIME = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
# Load in percent, then the clock in MHz where tegrastats shows it (as root): "EMC_FREQ 3%@2133",
# "GR3D_FREQ 26%@[306]" (one clock per GPC on an AGX Orin: "@[1300,1300]"), "GR3D_FREQ 0%".
_EMC = re.compile(r"\bEMC(?:_FREQ)? (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMPERATURE = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
# The current reading of a power rail, before tegrastats' running average: "VDD_IN 4428mW/4428mW".
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/\d+(?:mW)?(?=\s|$)")
# Sensors that read -256 C are switched off; PMIC@100C on older boards is a fixed placeholder.
_NO_SENSOR_BELOW = -100.0
_PLACEHOLDER_SENSORS = {"pmic"}
_INPUT_RAILS = ("VDD_IN", "VIN_SYS_5V0", "POM_5V_IN")
# Busy: the GPU load at which its clock should be the highest the governor allows.
_BUSY_PERCENT = 50
_CLOCK_DROP = 0.9


@dataclass(frozen=True)
class TegraSample:
    """One tegrastats line. Loads in percent, clocks in MHz (None where not shown: tegrastats
    leaves out the GPU clock when not run as root), temperatures in deg C by sensor name."""

    time: datetime | None
    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: int | None
    gpu_load: int | None
    gpu_mhz: int | None
    emc_load: int | None
    emc_mhz: int | None
    temperatures: dict[str, float]
    rails_mw: dict[str, int]


def parse_line(line: str) -> TegraSample | None:
    """One tegrastats line, or None for anything else (a blank or a truncated last line)."""
    ram = _RAM.search(line)
    if ram is None:
        return None
    stamp = _TIME.match(line)
    swap, emc, gr3d = _SWAP.search(line), _EMC.search(line), _GR3D.search(line)
    gpu_clocks = [int(v) for v in gr3d[2].split(",") if v] if gr3d and gr3d[2] else []
    temperatures = {
        name: float(value)
        for name, value in _TEMPERATURE.findall(line)
        if float(value) > _NO_SENSOR_BELOW and name.lower() not in _PLACEHOLDER_SENSORS
    }
    return TegraSample(
        time=datetime.strptime(stamp[1], "%m-%d-%Y %H:%M:%S") if stamp else None,
        ram_used_mb=int(ram[1]),
        ram_total_mb=int(ram[2]),
        swap_used_mb=int(swap[1]) if swap else None,
        gpu_load=int(gr3d[1]) if gr3d else None,
        gpu_mhz=max(gpu_clocks) if gpu_clocks else None,
        emc_load=int(emc[1]) if emc else None,
        emc_mhz=int(emc[2]) if emc and emc[2] else None,
        temperatures=temperatures,
        rails_mw={name: int(value) for name, value in _RAIL.findall(line)},
    )


def passive_trip_points(root: Path = Path("/sys/class/thermal")) -> dict[str, float]:
    """Lowest passive (throttling) trip point in deg C per thermal zone, by the zone's type
    without "-thermal" and lowercased ("tj-thermal" -> "tj"), as tegrastats names sensors."""
    found: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip().lower().removesuffix("-thermal")
            for kind in zone.glob("trip_point_*_type"):
                if kind.read_text().strip() != "passive":
                    continue
                temp = kind.with_name(kind.name.replace("_type", "_temp"))
                degrees = int(temp.read_text()) / 1e3
                found[name] = min(degrees, found.get(name, degrees))
        except (OSError, ValueError):
            continue  # a zone without readable trip points says nothing about throttling
    return found


def _range(values: Iterable[int | None], unit: str) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "not shown (run as root for it)"
    low, high = min(present), max(present)
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def throttling(samples: list[TegraSample], trip_points: dict[str, float]) -> str:
    """Signs of throttling in these samples, or why none were seen."""
    signs = []
    for sensor in sorted({name for s in samples for name in s.temperatures}):
        trip = trip_points.get(sensor.lower())
        peak = max(s.temperatures.get(sensor, float("-inf")) for s in samples)
        if trip is not None and peak >= trip:
            signs.append(f"{sensor} reached {peak:.1f} C, at its passive trip point {trip:.1f} C")
    busy = [s.gpu_mhz for s in samples if s.gpu_mhz and (s.gpu_load or 0) >= _BUSY_PERCENT]
    if busy and min(busy) < _CLOCK_DROP * max(busy):
        signs.append(
            f"GPU clock {min(busy)}-{max(busy)} MHz while >= {_BUSY_PERCENT}% busy (throttling, "
            "or the governor where jetson_clocks is off)"
        )
    if signs:
        return "yes: " + "; ".join(signs)
    basis = "no passive trip points readable" if not trip_points else "below trip points"
    clock = "steady busy GPU clock" if busy else "no busy GPU clock to compare"
    return f"none seen ({basis}, {clock})"


def summarize(samples: list[TegraSample], label: str, trip_points: dict[str, float]) -> list[str]:
    """The summary lines of one tegrastats log."""
    if not samples:
        return [f"tegrastats {label}: no samples"]
    stamps = [s.time for s in samples if s.time is not None]
    span = f" over {(stamps[-1] - stamps[0]).total_seconds():.0f} s" if len(stamps) > 1 else ""
    ram = max(samples, key=lambda s: s.ram_used_mb)
    swap = max((s.swap_used_mb or 0) for s in samples)
    hottest = max(((t, name) for s in samples for name, t in s.temperatures.items()), default=None)
    rail = next((r for r in _INPUT_RAILS if any(r in s.rails_mw for s in samples)), None)
    return [
        f"tegrastats {label}: {len(samples)} samples{span}; RAM used max {ram.ram_used_mb} of "
        f"{ram.ram_total_mb} MB, swap used max {swap} MB",
        f"  GPU (GR3D_FREQ) load max {max((s.gpu_load or 0) for s in samples)}%, clock "
        f"{_range((s.gpu_mhz for s in samples), ' MHz')}; EMC load max "
        f"{max((s.emc_load or 0) for s in samples)}%, clock "
        f"{_range((s.emc_mhz for s in samples), ' MHz')}",
        "  max temperature "
        + (f"{hottest[0]:.1f} C ({hottest[1]})" if hottest else "not shown")
        + (f"; {rail} max {max(s.rails_mw.get(rail, 0) for s in samples)} mW" if rail else ""),
        f"  throttling: {throttling(samples, trip_points)}",
    ]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", help="library, CUDA and GPU versions")
    probe = commands.add_parser("probe", help="exit status 0 where that path can run")
    probe.add_argument("name", choices=sorted(PROBES))
    tegra = commands.add_parser("tegrastats", help="summarize a tegrastats log")
    tegra.add_argument("log", type=Path)
    tegra.add_argument("--label", default="log", help="what ran while it was logged")
    tegra.add_argument("--record", type=Path, help="also append the summary to this file")
    args = parser.parse_args(argv)
    if args.command == "versions":
        for name, value in versions().items():
            print(f"{name}: {value}")
        return 0
    if args.command == "probe":
        problem = PROBES[args.name]()
        print(problem or "usable")
        return 1 if problem else 0
    try:
        text = args.log.read_text(errors="replace")
    except OSError as exc:
        print(f"tegrastats {args.label}: cannot read the log ({exc})", file=sys.stderr)
        return 1
    samples = [s for s in map(parse_line, text.splitlines()) if s is not None]
    lines = summarize(samples, args.label, passive_trip_points())
    print("\n".join(lines))
    if args.record:
        with args.record.open("a") as record:
            record.write("\n".join(lines) + "\n")
    return 0 if samples else 1


if __name__ == "__main__":
    raise SystemExit(main())
