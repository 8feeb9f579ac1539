"""Property-based fuzzing of the SNC container reader and the manifest parser.

Every mutated input must either decode to exactly what the intact file decodes to, or be
refused with a CodecError: never another exception, never different sound, never more output
than the file holds. Seeded (derandomized) and small in CI; a longer run:

    SCOREBRIDGE_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz_snc.py -q

Every finding of a longer run becomes a named test in tests/test_hardening_snc.py.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import CodecError
from engines.snc import SncReader
from engines.snc.manifest import Manifest
from tests.test_hardening_snc import remux
from tests.test_snc import encode_both_modes

EXAMPLES = int(os.environ.get("SCOREBRIDGE_FUZZ_EXAMPLES", "0")) or None


def fuzz(ci_examples: int):
    return settings(max_examples=EXAMPLES or ci_examples, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                    database=None)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return encode_both_modes(tmp_path_factory.mktemp("fuzz"), 1.5)


@pytest.fixture(scope="module")
def references(files) -> dict[str, dict[str, np.ndarray]]:
    return {mode: _decode(path) for mode, path in files.items()}


def _decode(path: Path) -> dict[str, np.ndarray]:
    reader = SncReader(path)
    reader.check_intact()
    blocks = list(reader.blocks(block_frames=24000))
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def _decodes_the_same_or_is_refused(path: Path, reference: dict[str, np.ndarray]) -> bool:
    """True when refused, False when decoded (and then identical to the reference)."""
    try:
        result = _decode(path)
    except CodecError as exc:
        assert str(exc), "an error without a message"
        return True
    assert set(result) == set(reference)
    for name, samples in reference.items():
        assert result[name].shape == samples.shape, name
        assert np.array_equal(result[name], samples), f"{name} decodes to other samples"
    return False


MODES = st.sampled_from(["lossless", "transparent"])


@fuzz(40)
@given(mode=MODES, flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                                 min_size=1, max_size=6))
def test_byte_flips_are_refused_or_change_nothing(files, references, tmp_path, mode, flips):
    data = bytearray(files[mode].read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path = tmp_path / "flipped.snc"
    path.write_bytes(bytes(data))
    _decodes_the_same_or_is_refused(path, references[mode])


@fuzz(20)
@given(mode=MODES, keep=st.floats(0, 1, exclude_max=True))
def test_truncations_are_refused_or_change_nothing(files, references, tmp_path, mode, keep):
    """(A cut inside the index after the last cluster loses nothing: the samples are the same.)"""
    data = files[mode].read_bytes()
    path = tmp_path / "cut.snc"
    path.write_bytes(data[: int(keep * len(data))])
    refused = _decodes_the_same_or_is_refused(path, references[mode])
    assert refused or keep > 0.9


@fuzz(20)
@given(mode=MODES, keep=st.floats(0.05, 1, exclude_max=True))
def test_salvage_of_a_cut_file_is_bounded_by_its_data(files, references, tmp_path, mode, keep):
    data = files[mode].read_bytes()
    path = tmp_path / "cut.snc"
    path.write_bytes(data[: int(keep * len(data))])
    try:
        reader = SncReader(path)
    except CodecError:
        return
    frames = 0
    try:
        for block in reader.blocks(block_frames=24000, salvage=list(reader.scan().damage)):
            frames += block["master"].shape[0]
    except CodecError:
        return
    assert frames <= references[mode]["master"].shape[0]


# -- the manifest ----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(["vocals\n", "../x", "a\x00", "", "master", "opus", "flac", "NaN"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every path into a JSON tree (keys and list indexes), leaves and inner nodes."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _paths(item, (*prefix, index))


def _mutate(data, path, action, value):
    if not path:
        return value if action == "replace" else data
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = value
    elif isinstance(parent, dict):
        parent[f"{key}_extra"] = value
    else:
        parent.append(value)
    return data


@pytest.fixture(scope="module")
def manifests(files) -> dict[str, dict]:
    return {mode: json.loads(SncReader(path).manifest.to_json()) for mode, path in files.items()}


@fuzz(100)
@given(mode=MODES, choice=st.integers(0, 10 ** 6), action=st.sampled_from(["replace", "delete", "add"]),
       value=JSON_VALUES, changes=st.integers(1, 3))
def test_manifest_field_mutations_are_refused_or_valid(manifests, mode, choice, action, value, changes):
    data = copy.deepcopy(manifests[mode])
    for round_ in range(changes):
        paths = list(_paths(data))
        path = paths[(choice + 7919 * round_) % len(paths)]
        data = _mutate(data, path, action, copy.deepcopy(value))
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):
        return
    try:
        manifest = Manifest.from_json(text)
    except CodecError as exc:
        assert str(exc)
        return
    manifest.validate()  # an accepted manifest is one the writer would also accept
    assert json.loads(manifest.to_json()) is not None


@fuzz(60)
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_manifest_text_that_is_not_a_manifest_is_refused(text):
    with pytest.raises(CodecError):
        Manifest.from_json(text)


@fuzz(8)
@given(choice=st.integers(0, 10 ** 6), value=JSON_VALUES)
def test_a_file_with_a_mutated_manifest_is_refused_or_decodes(files, references, manifests, tmp_path, choice,
                                                            value):
    data = copy.deepcopy(manifests["transparent"])
    paths = list(_paths(data))
    data = _mutate(data, paths[choice % len(paths)], "replace", value)
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):
        return
    path = tmp_path / "mutated.snc"
    remux(files["transparent"], path, text)
    try:
        reader = SncReader(path)
        reader.check_intact()
        frames = sum(b["master"].shape[0] for b in reader.blocks(block_frames=24000))
    except CodecError:
        return
    assert frames <= references["transparent"]["master"].shape[0] + 48000
