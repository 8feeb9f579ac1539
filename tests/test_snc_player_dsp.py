"""SNC player DSP logic without files: ramps, pan law, context and mapping validation."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ConfigError
from engines.snc.mastering import MasteringModel
from engines.snc_player.adaptive import DEFAULT_MAPPING, load_mapping
from engines.snc_player.contexts import load_contexts
from engines.snc_player.mixer import Mixer, pan_gains
from engines.va import CurveError, read_curve

RATE = 48000


def test_gain_changes_ramp_over_the_ramp_time_without_steps():
    mixer = Mixer(["a"], 1, MasteringModel.gain_only(np.array([1.0])), RATE, ramp_s=0.01)
    block = {"a": np.ones((256, 1), np.float32), "master": np.ones((256, 1), np.float32)}
    assert np.array_equal(mixer.process(block, 0), block["master"])
    mixer.set("a", mute=True)
    out = np.concatenate([mixer.process(block, 256 * (i + 1)) for i in range(4)])[:, 0]
    assert out[0] < 1.0 and out[479] == pytest.approx(0.0, abs=1e-6)  # 10 ms = 480 frames
    assert np.abs(np.diff(out)).max() <= 1.0 / 480 + 1e-6  # a linear ramp, no step
    mixer.set("a", mute=False)
    back = np.concatenate([mixer.process(block, 256 * (i + 5)) for i in range(3)])[:, 0]
    assert np.abs(np.diff(np.concatenate([out, back]))).max() <= 1.0 / 480 + 1e-6
    assert mixer.is_default and np.array_equal(mixer.process(block, 256 * 8), block["master"])


def test_change_during_a_ramp_starts_from_what_sounds():
    mixer = Mixer(["a"], 1, MasteringModel.gain_only(np.array([1.0])), RATE, ramp_s=0.01)
    block = {"a": np.ones((128, 1), np.float32), "master": np.ones((128, 1), np.float32)}
    mixer.set("a", gain_db=-96.0)
    first = mixer.process(block, 0)[:, 0]
    mixer.set("a", gain_db=0.0)
    second = mixer.process(block, 128)[:, 0]
    assert abs(second[0] - first[-1]) < 2.0 / 480


def test_pan_law_is_unity_at_centre_and_constant_power():
    assert np.array_equal(pan_gains(0.0, 2), [1.0, 1.0])
    for pan in (-1.0, -0.3, 0.4, 1.0):
        assert np.sum(pan_gains(pan, 2) ** 2) == pytest.approx(2.0)
    assert pan_gains(-1.0, 2)[1] == pytest.approx(0.0, abs=1e-12)


def test_user_contexts_are_validated(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[contexts.x]\nloudness = 3\n")
    with pytest.raises(ConfigError, match="unknown keys.*loudness"):
        load_contexts({}, bad)
    bad.write_text("[contexts.x]\nroutes = { vocals = [9] }\noutputs = 4\nlayout = 'multichannel'\n")
    with pytest.raises(ConfigError, match="ports 1..4"):
        load_contexts({}, bad)
    bad.write_text("[contexts.x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_contexts({}, bad)


def test_va_mapping_is_editable_and_checked(tmp_path):
    mapping = tmp_path / "map.toml"
    mapping.write_text('[arousal_db]\n"@drums" = 10.0\n')
    loaded = load_mapping(mapping)
    assert loaded.arousal_db == {"@drums": 10.0} and loaded.valence_db == DEFAULT_MAPPING.valence_db
    mapping.write_text("gain = 3\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_mapping(mapping)
    curve = tmp_path / "va.csv"
    curve.write_text("time_s,valence,arousal\n0,0,0\n0,0,0.5\n")
    with pytest.raises(CurveError, match="does not come after"):
        read_curve(curve)
    curve.write_text("t,v\n")
    with pytest.raises(CurveError, match="missing column"):
        read_curve(curve)
