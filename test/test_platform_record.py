"""benchmarks/platform_record: tegrastats lines of the shapes JetPack prints, their summary and
the throttling verdict, and the probes' exit statuses."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from benchmarks import platform_record
from benchmarks.platform_record import parse_line, passive_trip_points, summarize, throttling

# Orin Nano, JetPack 6, run as root: one GPC clock in brackets, lower-case sensor names.
ORIN_NANO = (
    "03-14-2025 09:26:53 RAM 3121/7620MB (lfb 12x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [12%@1510,8%@1510,15%@1510,9%@1510,off,off] EMC_FREQ 18%@2133 GR3D_FREQ 87%@[624] "
    "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@52.125C soc2@50.031C "
    "soc0@51.5C gpu@53.968C tj@53.968C soc1@50.75C VDD_IN 9120mW/7480mW "
    "VDD_CPU_GPU_CV 3210mW/2540mW VDD_SOC 2060mW/1930mW"
)
# AGX Orin: a clock per GPC, switched-off sensors at -256C, a 5 V system input rail.
AGX_ORIN = (
    "03-14-2025 09:26:54 RAM 10350/62841MB (lfb 3102x4MB) SWAP 0/31420MB (cached 0MB) "
    "CPU [3%@2201,1%@2201,0%@2201,0%@2201,2%@2201,0%@2201,0%@2201,0%@2201] "
    "EMC_FREQ 4%@3199 GR3D_FREQ 91%@[1300,1300] VIC_FREQ 729 APE 174 CV0@-256C CPU@47.406C "
    "Tboard@34C SOC2@44.125C Tdiode@36.5C SOC0@45.062C CV1@-256C GPU@49.031C tj@49.031C "
    "SOC1@44.5C CV2@-256C VDD_GPU_SOC 9840mW/6120mW VDD_CPU_CV 1580mW/1420mW "
    "VIN_SYS_5V0 5230mW/5080mW"
)
# Not root: no GPU clock; older JetPack 5 spelling of the rails without "mW".
NOT_ROOT = (
    "RAM 2800/7620MB (lfb 40x4MB) SWAP 12/3810MB (cached 0MB) CPU [5%@729,2%@729] "
    "EMC_FREQ 0% GR3D_FREQ 0% cpu@41C gpu@40.5C tj@41C PMIC@100C VDD_IN 4410/4400"
)


def test_an_orin_nano_line():
    sample = parse_line(ORIN_NANO)
    assert sample is not None
    assert sample.time == datetime(2025, 3, 14, 9, 26, 53)
    assert (sample.ram_used_mb, sample.ram_total_mb, sample.swap_used_mb) == (3121, 7620, 0)
    assert (sample.gpu_load, sample.gpu_mhz, sample.emc_load, sample.emc_mhz) == (87, 624, 18, 2133)
    assert sample.temperatures["tj"] == pytest.approx(53.968)
    assert len(sample.temperatures) == 6
    # The current reading, not tegrastats' running average after the slash.
    assert sample.rails_mw == {"VDD_IN": 9120, "VDD_CPU_GPU_CV": 3210, "VDD_SOC": 2060}


def test_an_agx_orin_line_takes_the_fastest_gpc_and_drops_switched_off_sensors():
    sample = parse_line(AGX_ORIN)
    assert sample is not None
    assert (sample.gpu_load, sample.gpu_mhz, sample.emc_mhz) == (91, 1300, 3199)
    assert not {"CV0", "CV1", "CV2"} & set(sample.temperatures)
    assert sample.temperatures["GPU"] == pytest.approx(49.031)
    assert sample.rails_mw["VIN_SYS_5V0"] == 5230


def test_a_line_without_clocks_or_timestamp_and_with_the_pmic_placeholder():
    sample = parse_line(NOT_ROOT)
    assert sample is not None
    assert sample.time is None
    assert (sample.gpu_load, sample.gpu_mhz, sample.emc_load, sample.emc_mhz) == (0, None, 0, None)
    assert "PMIC" not in sample.temperatures
    assert sample.rails_mw == {"VDD_IN": 4410}


@pytest.mark.parametrize("line", ["", "tegrastats: command not found", "03-14-2025 09:26:53 RA"])
def test_anything_else_is_no_sample(line):
    assert parse_line(line) is None


def _zone(root: Path, index: int, kind: str, trips: list[tuple[str, int]]) -> None:
    zone = root / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    for number, (trip_type, millidegrees) in enumerate(trips):
        (zone / f"trip_point_{number}_type").write_text(trip_type + "\n")
        (zone / f"trip_point_{number}_temp").write_text(f"{millidegrees}\n")


def test_the_lowest_passive_trip_point_per_zone(tmp_path):
    _zone(tmp_path, 0, "tj-thermal", [("critical", 104500), ("passive", 99000)])
    _zone(tmp_path, 1, "gpu-thermal", [("passive", 95500), ("passive", 97000)])
    _zone(tmp_path, 2, "Tboard_tegra", [("critical", 107000)])
    assert passive_trip_points(tmp_path) == {"tj": 99.0, "gpu": 95.5}
    assert passive_trip_points(tmp_path / "absent") == {}


def test_throttling_by_a_trip_point_or_by_the_busy_gpu_clock_falling():
    cool = parse_line(ORIN_NANO)
    hot = parse_line(ORIN_NANO.replace("tj@53.968C", "tj@99.2C"))
    slowed = parse_line(ORIN_NANO.replace("87%@[624]", "95%@[306]"))
    idle_slow = parse_line(ORIN_NANO.replace("87%@[624]", "3%@[306]"))
    assert cool and hot and slowed and idle_slow
    trips = {"tj": 99.0}
    assert throttling([cool, cool], trips).startswith("none seen (below trip points")
    verdict = throttling([cool, hot], trips)
    assert verdict.startswith("yes: ") and "tj reached 99.2 C" in verdict
    verdict = throttling([cool, slowed], trips)
    assert verdict.startswith("yes: ") and "GPU clock 306-624 MHz" in verdict
    # A low clock while the GPU idles is the governor, not throttling.
    assert throttling([cool, idle_slow], trips).startswith("none seen")
    assert "no passive trip points readable" in throttling([cool], {})


def test_summary_lines():
    samples = [parse_line(line) for line in (ORIN_NANO, ORIN_NANO.replace("09:26:53", "09:26:59"))]
    samples = [s for s in samples if s is not None]
    lines = summarize(samples, "sustained", {"tj": 99.0})
    text = "\n".join(lines)
    assert lines[0].startswith("tegrastats sustained: 2 samples over 6 s; RAM used max 3121 of")
    assert "GR3D_FREQ) load max 87%, clock 624 MHz" in text
    assert "EMC load max 18%, clock 2133 MHz" in text
    assert "max temperature 54.0 C (tj)" in text and "VDD_IN max 9120 mW" in text
    assert "throttling: none seen" in text
    not_root = summarize([s for s in [parse_line(NOT_ROOT)] if s], "build", {})
    assert "clock not shown (run as root for it)" in "\n".join(not_root)
    assert summarize([], "build", {}) == ["tegrastats build: no samples"]


def test_the_tegrastats_command_records_its_summary(tmp_path, capsys):
    log, record = tmp_path / "tegrastats.log", tmp_path / "summary.txt"
    log.write_text(f"{ORIN_NANO}\n{AGX_ORIN}\nRAM 31")  # the last line cut off by the kill
    assert (
        platform_record.main(["tegrastats", str(log), "--label", "x", "--record", str(record)]) == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("tegrastats x: 2 samples") and record.read_text() == printed
    assert platform_record.main(["tegrastats", str(tmp_path / "none.log")]) == 1


def test_a_probe_says_why_a_path_cannot_run(monkeypatch, capsys):
    monkeypatch.setitem(platform_record.PROBES, "triton", lambda: "Triton is not importable")
    assert platform_record.main(["probe", "triton"]) == 1
    assert capsys.readouterr().out == "Triton is not importable\n"
    monkeypatch.setitem(platform_record.PROBES, "triton", lambda: None)
    assert platform_record.main(["probe", "triton"]) == 0
    assert capsys.readouterr().out == "usable\n"


def test_versions_name_every_library_even_where_one_is_missing():
    found = platform_record.versions()
    for name in ("python", "numpy", "opencv", "onnxruntime", "tensorrt", "torch", "cuda-python"):
        assert found[name]
    assert "CUDA runtime" in found or "CUDA" in found
