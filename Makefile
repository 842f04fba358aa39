# Entry points. `make demo` and `make test` set everything up first (idempotent).
#   make setup   .venv with every pinned dependency (ROS 2 wheels, colcon, PyTorch, test oracle,
#                the ROS 2 launch and CLI tools), then colcon build into build/ and install/
#   make test    lint + all tests (what CI runs): the Kilted stack in .venv, the ROS-free core on
#                Python 3.10 (.venv-py310), the TensorRT backend's CUDA calls against cuda-python
#                12.2 and 12.9 (.venv-cuda12.*), the package built and its DDS tests run against ROS 2
#                Jazzy's wheels (.venv-jazzy, build-jazzy/, install-jazzy/). Each step's time is
#                printed as `[step] NAME: N s` and appended to log/steps.txt.
#   make demo    segment a real photo; writes mask and overlay PNGs to out/demo/
#   make bench   latency of this pipeline against the official one on this machine
#                (the benchmarks are modules of benchmarks/, run from here with `python -m`)
#   make bench-host  host-side cost per frame (image buffer, masks, label image, crops, overlay)
#   make bench-stream  the node's per-frame work at 30 Hz with every output, in one process (on a
#                GPU when one is visible: BACKEND=torch DEVICE=cuda)
#   make bench-memory  RSS of the core per stage and of the node under a simulated camera
#   make bench-cameras one node serving 2 and 4 simulated cameras against one camera
#   make bench-bag  process-bag's frames/s on a recording, against the official pipeline
#   make ctrl-c-check  Ctrl-C of `ros2 launch` 20 times on Kilted and on Jazzy, counted

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_VERSION := 26.3
SETUP_STAMP := $(VENV)/.setup-$(shell cat requirements/dev.lock requirements/no-deps.lock setup.py | cksum | cut -d' ' -f1)
# Checkpoint for demo/bench: a path, empty for the official file (downloaded once),
# or `random` for random weights in the official layout (pipeline check; meaningless masks).
CHECKPOINT ?=
DEMO_IMAGE ?= skimage:astronaut
DEMO_PROMPTS ?= --box 15 15 365 512 --box 355 0 470 290 --box 275 340 512 512 --box 0 0 100 512

.PHONY: setup build-ros test lint demo segment-photo bench bench-host bench-node bench-tracking \
	bench-depth bench-memory bench-stream bench-cameras bench-bag ctrl-c-check clean setup-jazzy build-ros-jazzy test-jazzy setup-py310 test-py310 \
	test-cuda12 \
	test-models

setup: $(SETUP_STAMP) build-ros

# The ROS 2 launch and command-line tools are not among the ROS 2 wheels: their wheels, and the
# sources of composition_interfaces (which launch_ros imports), come from the folder that
# scripts/find_ros2_tools.sh finds (ROS2_TOOLS overrides it); CI fails without them.
ROS2_TOOLS_DIR := $(shell bash scripts/find_ros2_tools.sh 2>/dev/null)
composition_interfaces = $(if $(ROS2_TOOLS_DIR),$(ROS2_TOOLS_DIR)/src/$(1)/composition_interfaces)

$(SETUP_STAMP): requirements/dev.lock requirements/no-deps.lock setup.py
	@echo "[setup] creating $(VENV) and installing pinned dependencies (a few minutes the first time)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/dev.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/no-deps.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.setup-*
	@touch $@

build-ros: $(SETUP_STAMP)
	@bash scripts/install_ros2_tools.sh $(VENV) kilted
	@VIRTUAL_ENV=$(CURDIR)/$(VENV) \
		MOBILESAM_ROS_EXTRA_BASE_PATHS="$(call composition_interfaces,kilted)" \
		bash scripts/build_ros.sh

lint: $(SETUP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check mobilesam_ros test benchmarks

STEP := scripts/timed_step.sh

# The test steps all run, so that one failing step does not hide the others' results.
test:
	@$(STEP) setup $(MAKE) --no-print-directory setup
	@$(STEP) lint $(MAKE) --no-print-directory lint
	@failed=""; \
	$(STEP) pytest $(PY) -m pytest -q || failed="$$failed pytest"; \
	$(STEP) dds env MOBILESAM_ROS_COLCON_TEST=1 $(PY) test/run_ros_tests.py || failed="$$failed dds"; \
	$(STEP) py310 $(MAKE) --no-print-directory test-py310 || failed="$$failed py310"; \
	$(STEP) cuda12 $(MAKE) --no-print-directory test-cuda12 || failed="$$failed cuda12"; \
	$(STEP) jazzy $(MAKE) --no-print-directory test-jazzy || failed="$$failed jazzy"; \
	if [ -n "$$failed" ]; then echo "[test] failed steps:$$failed" >&2; exit 1; fi

# cuda-python 12.2 (cuda.cudart) and 12.9 (cuda.bindings), the range of the JetPack 6 extra: the
# TensorRT backend's CUDA calls bound to their signatures, each in a small venv of its own (the
# main environment has 13.x).
CUDA12_VERSIONS := 12.2 12.9
test-cuda12:
	@for version in $(CUDA12_VERSIONS); do \
		venv=.venv-cuda$$version; lock=requirements/cuda$$version.lock; \
		stamp=$$venv/.setup-$$(cksum < $$lock | cut -d' ' -f1); \
		if [ ! -f $$stamp ]; then rm -rf $$venv && $(PYTHON) -m venv $$venv && \
			$$venv/bin/pip install -q --disable-pip-version-check -r $$lock && touch $$stamp \
			|| exit 1; fi; \
		PYTHONPATH=$(CURDIR) $$venv/bin/python -m pytest -q -p no:cacheprovider \
			test/test_tensorrt_static.py -k cuda_calls || exit 1; \
	done

# ROS 2 Jazzy (rclpy 7.1, Fast DDS 2.14): its own venv, build and install folders, so that it
# never mixes with the Kilted stack of .venv. Same interpreter as .venv.
JAZZY_VENV := .venv-jazzy
JAZZY_PY := $(JAZZY_VENV)/bin/python
JAZZY_STAMP := $(JAZZY_VENV)/.setup-$(shell cat requirements/jazzy.lock | cksum | cut -d' ' -f1)
# ROS_DISTRO as a Jazzy install's setup.bash sets it (the wheels set none): it decides which
# variable names the Fast DDS profile (Fast DDS 2.14 reads FASTRTPS_DEFAULT_PROFILES_FILE).
JAZZY_ENV := VIRTUAL_ENV=$(CURDIR)/$(JAZZY_VENV) MOBILESAM_ROS_BUILD_BASE=build-jazzy \
	MOBILESAM_ROS_INSTALL_BASE=install-jazzy ROS_DISTRO=jazzy

$(JAZZY_STAMP): requirements/jazzy.lock
	@echo "[setup] creating $(JAZZY_VENV) with ROS 2 Jazzy's wheels (a few minutes the first time)"
	@test -x $(JAZZY_PY) || $(PYTHON) -m venv $(JAZZY_VENV)
	$(JAZZY_PY) -m pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(JAZZY_PY) -m pip install -q --disable-pip-version-check -r requirements/jazzy.lock
	@rm -f $(JAZZY_VENV)/.setup-*
	@touch $@

setup-jazzy: $(JAZZY_STAMP) build-ros-jazzy

build-ros-jazzy: $(JAZZY_STAMP)
	@bash scripts/install_ros2_tools.sh $(JAZZY_VENV) jazzy
	@$(JAZZY_ENV) MOBILESAM_ROS_EXTRA_BASE_PATHS="$(call composition_interfaces,jazzy)" \
		bash scripts/build_ros.sh

# The demo tool's run is the same on both distributions: the Kilted step runs it.
test-jazzy: setup-jazzy
	$(JAZZY_ENV) $(JAZZY_PY) test/run_ros_tests.py \
		--deselect=test/dds/test_seg_node.py::test_demo_runs_the_node_and_writes_overlays

# The ROS-free core on Python 3.10 (JetPack 6's interpreter) with the runtime dependencies only:
# no ROS, no PyTorch. Tests that need PyTorch skip; the ONNX graphs come from $(TEST_MODELS),
# which .venv's PyTorch exports once. Without a Python 3.10 the step is skipped, except in CI.
PY310_VENV := .venv-py310
PY310 := $(PY310_VENV)/bin/python
PY310_STAMP := $(PY310_VENV)/.setup-$(shell cat requirements/py310.lock setup.py | cksum | cut -d' ' -f1)
TEST_MODELS := .cache/test-models
TEST_MODELS_STAMP := $(TEST_MODELS)/.prepared

$(PY310_STAMP): requirements/py310.lock setup.py
	@echo "[setup] creating $(PY310_VENV) on Python 3.10 (runtime dependencies only)"
	@test -x $(PY310) || "$$(bash scripts/find_python.sh 3.10)" -m venv $(PY310_VENV)
	$(PY310) -m pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY310) -m pip install -q --disable-pip-version-check -r requirements/py310.lock
	$(PY310) -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(PY310_VENV)/.setup-*
	@touch $@

setup-py310:
	@if bash scripts/find_python.sh 3.10 >/dev/null; then $(MAKE) --no-print-directory $(PY310_STAMP); \
	elif [ "$$CI" = true ]; then echo "[py310] no Python 3.10: CI must test on it" >&2; exit 1; \
	else echo "[py310] SKIPPED: no Python 3.10 here (see the message above)"; fi

# Made again when the model code changes (the checkpoint's layout, the export).
$(TEST_MODELS_STAMP): $(SETUP_STAMP) scripts/prepare_test_models.py $(wildcard mobilesam_ros/core/model/*.py)
	@rm -rf $(TEST_MODELS)
	$(PY) scripts/prepare_test_models.py $(TEST_MODELS)
	@touch $@

test-models: $(TEST_MODELS_STAMP)

# The requirement files' resolution names its target Python itself: the main step runs it.
test-py310: setup-py310
	@if [ -x $(PY310) ]; then $(MAKE) --no-print-directory $(TEST_MODELS_STAMP) && \
		MOBILESAM_ROS_TEST_MODELS=$(CURDIR)/$(TEST_MODELS) $(PY310) -m pytest -q \
		--deselect test/test_requirements_resolve.py; fi

# Installed scripts run with the install space sourced (generated messages, message libraries).
ROS_RUN := . install/setup.sh &&
DEMO_SECONDS ?= 10

demo: setup
	@$(MAKE) --no-print-directory _checkpoint
	@bash -c '$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo \
		--seconds $(DEMO_SECONDS) --output out/demo $(CHECKPOINT_ARG)'

segment-photo: setup
	@$(MAKE) --no-print-directory _checkpoint
	$(VENV)/bin/mobilesam-ros segment $(DEMO_IMAGE) $(DEMO_PROMPTS) $(CHECKPOINT_ARG) --output-dir out/photo

bench: setup
	@$(MAKE) --no-print-directory _checkpoint
	$(PY) -m benchmarks.bench $(CHECKPOINT_ARG)
	$(PY) -m benchmarks.bench_everything $(CHECKPOINT_ARG)

# Host-side stages of one frame, old full-frame path against the cropped path (no model runs).
bench-host: $(SETUP_STAMP)
	$(PY) -m benchmarks.bench_host

# The node's per-frame work at 30 Hz (10 detections per frame, every output built), without ROS.
bench-stream: $(SETUP_STAMP)
	$(PY) -m benchmarks.bench_stream --backend $(or $(BACKEND),auto) \
		--device $(or $(DEVICE),auto)

# The node over DDS: 30 Hz camera, 640x480, 10 box prompts per frame (random weights by default).
bench-node: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	@bash -c '$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo \
		--seconds 20 --prompts 10 --backend onnxruntime \
		--checkpoint $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))'

# Lifting 10 masks into 3D with depth on a synthetic 640x480 RGB-D frame (no model).
bench-depth: setup
	$(PY) -m benchmarks.bench_depth

# Tracking: detector at 3 Hz, camera at 30 Hz, 5 objects.
bench-tracking: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	@bash -c '$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo \
		--seconds 20 --prompts 5 --detector-rate 3 --backend onnxruntime \
		--checkpoint $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))'

# Memory on the CPU, per CPU backend installed here (ONNX Runtime; OpenVINO on x86): the core's
# RSS after load, encode and decoding 1, 10 and 100 boxes, then the node for 60 s under a 10 Hz
# 640x480 camera with 10 boxes per frame, then another 60 s with 100 boxes per frame (the
# visible objects' boxes and sub-boxes of them), one run after the other.
CPU_BACKENDS = onnxruntime $(shell $(PY) -c "import openvino" 2>/dev/null && echo openvino)
MEMORY_CHECKPOINT = $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))
bench-memory: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	@for backend in $(CPU_BACKENDS); do \
		$(PY) -m benchmarks.bench_memory --backend $$backend --checkpoint $(MEMORY_CHECKPOINT) \
			|| exit 1; \
	done
	@for backend in $(CPU_BACKENDS); do for prompts in 10 100; do \
		bash -c "$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo --seconds 60 \
			--rate 10 --prompts $$prompts --backend $$backend --sample-rss \
			--checkpoint $(MEMORY_CHECKPOINT)" || exit 1; \
	done; done

# One node serving 2 and 4 simulated cameras (10 Hz, 640x480, 5 boxes each) against one camera:
# answers per camera per second, their balance, node RSS.
bench-cameras: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	bash -c "$(ROS_RUN) $(PY) benchmarks/bench_cameras.py --checkpoint $(MEMORY_CHECKPOINT) \
		--backend $(or $(BACKEND),auto)"

# process-bag's frames/s on a recording of 640x480 frames with 5 boxes, against the official
# pipeline on the same frames (no ROS needed).
bench-bag: setup
	@$(MAKE) --no-print-directory _checkpoint
	$(PY) -m benchmarks.bench_bag $(CHECKPOINT_ARG) --backend $(or $(BACKEND),auto)

# Ctrl-C of `ros2 launch` as a terminal sends it (SIGINT to the whole process group), CTRL_C_TRIES
# times in each of five cases (while loading, while exporting, idle, mid-inference, during the
# lifecycle node's configure), on Kilted and on Jazzy; one JSON line per try in
# log/ctrl-c-<distro>.jsonl, counted at the end.
CTRL_C_TRIES ?= 4
ctrl-c-check: setup setup-jazzy
	@mkdir -p log && rm -f log/ctrl-c-kilted.jsonl log/ctrl-c-jazzy.jsonl
	-MOBILESAM_ROS_CTRL_C_TRIES=$(CTRL_C_TRIES) \
		MOBILESAM_ROS_CTRL_C_REPORT=$(CURDIR)/log/ctrl-c-kilted.jsonl \
		$(PY) test/run_ros_tests.py -k ctrl_c
	-$(JAZZY_ENV) MOBILESAM_ROS_CTRL_C_TRIES=$(CTRL_C_TRIES) \
		MOBILESAM_ROS_CTRL_C_REPORT=$(CURDIR)/log/ctrl-c-jazzy.jsonl \
		$(JAZZY_PY) test/run_ros_tests.py -k ctrl_c
	$(PY) scripts/count_clean_stops.py log/ctrl-c-kilted.jsonl log/ctrl-c-jazzy.jsonl

RANDOM_CHECKPOINT := .cache/random-weights-seed0.pt
ifeq ($(CHECKPOINT),random)
CHECKPOINT_ARG := --checkpoint $(RANDOM_CHECKPOINT)
else ifneq ($(CHECKPOINT),)
CHECKPOINT_ARG := --checkpoint $(CHECKPOINT)
endif

_checkpoint:
ifeq ($(CHECKPOINT),random)
	@test -f $(RANDOM_CHECKPOINT) || $(PY) -c "from mobilesam_ros.core.model.modules import \
	write_random_checkpoint as w; w('$(RANDOM_CHECKPOINT)')"
	@echo "[demo] RANDOM WEIGHTS: this checks the pipeline; the masks mean nothing."
endif

clean:
	rm -rf build install build-jazzy install-jazzy log out .cache
