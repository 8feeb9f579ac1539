"""`va analyze --sensor onnx:PATH`: real ONNX Runtime sessions on models built and exported here."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines.va import read_curve
from engines.va.analyze import analyze_video
from engines.va.errors import VideoError
from engines.va.sensor_onnx import OnnxSensor, load_probe
from engines.va.synthetic import Shot, write_video
from tests.jackutil import ROOT

# valence = tanh(3 (R - B)), arousal = tanh(4 (mean(R, G, B) - 0.5)) of the frame's mean colour
WEIGHT = np.array([[3.0, 4 / 3], [0.0, 4 / 3], [-3.0, 4 / 3]], dtype=np.float32)
BIAS = np.array([0.0, -2.0], dtype=np.float32)


def _mean_colour_model(path, size=32, channels_last=False, batch="N", outputs_va=True):
    """ReduceMean over the image, then a linear map (+ tanh when it outputs VA directly)."""
    shape = [batch, size, size, 3] if channels_last else [batch, 3, size, size]
    nodes = []
    source = "image"
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        source = "nchw"
    nodes.append(helper.make_node("ReduceMean", [source, "axes"], ["colour"], keepdims=0))
    initializers = [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")]
    if outputs_va:
        nodes += [helper.make_node("MatMul", ["colour", "weight"], ["linear"]),
                  helper.make_node("Add", ["linear", "bias"], ["shifted"]),
                  helper.make_node("Tanh", ["shifted"], ["out"])]
        initializers += [numpy_helper.from_array(WEIGHT, "weight"), numpy_helper.from_array(BIAS, "bias")]
        out_shape = [batch, 2]
    else:
        nodes.append(helper.make_node("Identity", ["colour"], ["out"]))
        out_shape = [batch, 3]
    graph = helper.make_graph(nodes, "mean_colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _expected(colour, brightness):
    rgb = np.clip(np.asarray(colour) * brightness * 2.0, 0, 1)
    return np.tanh(rgb @ WEIGHT.astype(np.float64) + BIAS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("va_sensor")
    warm = write_video(folder / "warm.mp4", [Shot(2, (0.8, 0.5, 0.3), 0.5, texture=0.0)], fps=10)
    cold = write_video(folder / "cold.mp4", [Shot(2, (0.3, 0.5, 0.8), 0.3, texture=0.0)], fps=10)
    return folder, warm, cold


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_model_that_outputs_va_drives_the_curve(clips, channels_last):
    folder, warm, cold = clips
    model = _mean_colour_model(folder / f"va_{channels_last}.onnx", channels_last=channels_last)
    sensor = OnnxSensor(model)
    assert sensor.size == (32, 32) and sensor.batch == 16 and sensor.channels_last == channels_last
    for path, colour, brightness in ((warm, (0.8, 0.5, 0.3), 0.5), (cold, (0.3, 0.5, 0.8), 0.3)):
        result = analyze_video(path, sensor=OnnxSensor(model), smooth_s=0.0)
        expected = _expected(colour, brightness)
        assert np.abs(result.curve.valence - expected[0]).max() < 0.05
        assert np.abs(result.curve.arousal - expected[1]).max() < 0.05
        assert result.sensor == f"onnx:{model}"
    assert _expected((0.8, 0.5, 0.3), 0.5)[0] > 0.5 > -0.5 > _expected((0.3, 0.5, 0.8), 0.3)[0]


def test_an_embedding_model_with_a_probe_file(clips, tmp_path):
    _, warm, _ = clips
    model = _mean_colour_model(tmp_path / "embed.onnx", batch=1, outputs_va=False)
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"weight": WEIGHT.tolist(), "bias": BIAS.tolist(), "activation": "tanh"}))
    sensor = OnnxSensor(model, load_probe(probe))
    assert sensor.batch == 1
    curve = analyze_video(warm, sensor=sensor, smooth_s=0.0).curve
    assert np.abs(curve.valence - _expected((0.8, 0.5, 0.3), 0.5)[0]).max() < 0.05
    with pytest.raises(VideoError, match="give a probe file"):
        analyze_video(warm, sensor=OnnxSensor(model))


@pytest.mark.slow
def test_a_torch_exported_encoder_and_npz_probe_match_torch(clips, tmp_path):
    torch = pytest.importorskip("torch")
    from engines.va.decode import decode_samples

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 8)).eval()
    path = tmp_path / "encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(encoder, torch.zeros(1, 3, 24, 24), str(path), input_names=["image"],
                          output_names=["embedding"], dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}},
                          dynamo=False)
    weight = np.random.default_rng(0).normal(0, 0.5, (8, 2))
    bias = np.array([0.1, -0.1])
    np.savez(tmp_path / "probe.npz", weight=weight, bias=bias)
    _, warm, _ = clips
    curve = analyze_video(warm, sensor=OnnxSensor(path, load_probe(tmp_path / "probe.npz")), smooth_s=0.0).curve
    frames = [f.rgb for f in decode_samples(warm, 10, size=(24, 24))]
    batch = torch.from_numpy(np.stack(frames).astype(np.float32) / 255).permute(0, 3, 1, 2)
    with torch.no_grad():
        reference = np.clip(encoder(batch).numpy() @ weight + bias, -1, 1)
    assert len(frames) == len(curve) == 20
    assert np.allclose(curve.valence, reference[:, 0], atol=1e-4)
    assert np.allclose(curve.arousal, reference[:, 1], atol=1e-4)


def test_sensor_contract_violations_are_named(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        OnnxSensor(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(VideoError, match="cannot load"):
        OnnxSensor(tmp_path / "junk.onnx")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "gray.onnx")
    with pytest.raises(VideoError, match="expected 3"):
        OnnxSensor(tmp_path / "gray.onnx")
    (tmp_path / "probe.json").write_text(json.dumps({"weight": [[1, 2, 3]], "bias": [0, 0]}))
    with pytest.raises(VideoError, match=r"weight must be \[D, 2\]"):
        load_probe(tmp_path / "probe.json")


@pytest.mark.slow
def test_cli_runs_the_sensor_and_fails_cleanly_on_a_bad_one(clips, tmp_path):
    _, warm, _ = clips
    model = _mean_colour_model(tmp_path / "va.onnx")
    out = tmp_path / "va.csv"
    run = subprocess.run([sys.executable, "-m", "bridge", "va", "analyze", str(warm), "-o", str(out),
                          "--sensor", f"onnx:{model}"],
                         cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"onnx:{model} sensor" in run.stdout
    assert read_curve(out).valence.mean() > 0.5
    embed = _mean_colour_model(tmp_path / "embed.onnx", outputs_va=False)
    bad = tmp_path / "bad.csv"
    run = subprocess.run([sys.executable, "-m", "bridge", "va", "analyze", str(warm), "-o", str(bad),
                          "--sensor", f"onnx:{embed}"],
                         cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "probe" in run.stderr and not bad.exists()
