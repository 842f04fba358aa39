# Entry points. `make demo` and `make test` set everything up first (idempotent).
#   make setup   .venv with every pinned dependency (ROS 2 wheels, colcon, PyTorch, test oracle),
#                then colcon build into build/ and install/
#   make test    lint + all tests (what CI runs)
#   make demo    segment a real photo; writes mask and overlay PNGs to out/demo/
#   make bench   latency of this pipeline against the official one on this machine
#   make bench-host  host-side cost per frame (image buffer, masks, label image, crops, overlay)
#   make bench-memory  RSS of the core per stage and of the node under a simulated camera

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
	bench-depth bench-memory clean

setup: $(SETUP_STAMP) build-ros

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
	@VIRTUAL_ENV=$(CURDIR)/$(VENV) bash scripts/build_ros.sh

lint: $(SETUP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check mobilesam_ros test

test: setup lint
	$(PY) -m pytest -q
	$(PY) test/dds/run_dds_tests.py

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
	$(VENV)/bin/mobilesam-ros bench --backend onnxruntime $(CHECKPOINT_ARG)

# Host-side stages of one frame, old full-frame path against the cropped path (no model runs).
bench-host: $(SETUP_STAMP)
	$(PY) -m mobilesam_ros.tools.bench_host

# The node over DDS: 30 Hz camera, 640x480, 10 box prompts per frame (random weights by default).
bench-node: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	@bash -c '$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo \
		--seconds 20 --prompts 10 --backend onnxruntime \
		--checkpoint $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))'

# Lifting 10 masks into 3D with depth on a synthetic 640x480 RGB-D frame (no model).
bench-depth: setup
	$(PY) -m mobilesam_ros.tools.bench_depth

# Tracking: detector at 3 Hz, camera at 30 Hz, 5 objects.
bench-tracking: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	@bash -c '$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo \
		--seconds 20 --prompts 5 --detector-rate 3 --backend onnxruntime \
		--checkpoint $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))'

# Memory on the CPU with ONNX Runtime: the core's RSS after load, encode and decoding 1, 10 and
# 100 boxes, then the node for 60 s under a 10 Hz 640x480 camera with 10 boxes per frame.
bench-memory: setup
	@$(MAKE) --no-print-directory _checkpoint CHECKPOINT=$(or $(CHECKPOINT),random)
	$(PY) -m mobilesam_ros.tools.bench_memory \
		--checkpoint $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))
	@bash -c '$(ROS_RUN) $(PY) install/mobilesam_ros/lib/mobilesam_ros/seg_demo \
		--seconds 60 --rate 10 --prompts 10 --backend onnxruntime --sample-rss \
		--checkpoint $(or $(filter-out random,$(CHECKPOINT)),$(RANDOM_CHECKPOINT))'

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
	rm -rf build install log out .cache
