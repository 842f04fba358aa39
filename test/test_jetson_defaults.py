"""Defaults that shrink on a Jetson, whose GPU shares the board's memory."""

from __future__ import annotations

from mobilesam_ros.core import jetson, segmenter
from mobilesam_ros.core.backends.tensorrt import engine_cache


def test_a_jetson_is_recognized_by_its_tegra_release_file(tmp_path):
    release = tmp_path / "nv_tegra_release"
    assert not jetson.is_jetson(release)
    assert jetson.default_decoder_batch(release) == 64
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    assert jetson.is_jetson(release)
    assert jetson.default_decoder_batch(release) == 16


def test_segmenter_and_tensorrt_profile_take_the_same_platform_default():
    expected = jetson.default_decoder_batch()
    assert segmenter.DEFAULT_MAX_BATCH == engine_cache.DEFAULT_MAX_PROMPTS == expected
    assert engine_cache.DecoderProfile().max_prompts == expected
