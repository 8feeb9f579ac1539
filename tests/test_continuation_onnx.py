"""The exported continuation model: card, sha256, KV-cache parity and constrained generation
through a real ONNX Runtime session (numpy + onnxruntime only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelLoadError
from engines.continuation import tokens as tk
from engines.continuation.runtime import DEFAULT_MODEL, ContinuationModel, input_names
from engines.continuation.sample import SamplingConfig, generate, scale_pitch_classes
from onnx_models import check_parity


@pytest.fixture(scope="module")
def model() -> ContinuationModel:
    return ContinuationModel.load(DEFAULT_MODEL)


def test_card_describes_the_file(model: ContinuationModel) -> None:
    card = model.card
    for key in ("onnx_file", "sha256", "data", "splits", "metrics", "inputs", "outputs", "model"):
        assert key in card
    assert card["onnx_file"] == DEFAULT_MODEL.name
    assert tuple(i["name"] for i in card["inputs"]) == input_names(card["model"]["layers"])
    assert card["tokenizer"]["vocab_size"] == tk.VOCAB_SIZE
    assert card["tokenizer"]["tokens"][tk.BAR] == "BAR"


def test_cached_decoding_reproduces_the_export(model: ContinuationModel) -> None:
    card_path = DEFAULT_MODEL.with_name("continuation.card.json")
    assert check_parity(card_path) <= model.card["parity"]["atol"]


def test_cache_equals_full_pass(model: ContinuationModel) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(tk.NOTE_BASE, tk.VOCAB_SIZE, 20)
    va = rng.uniform(-1, 1, (20, 2)).astype(np.float32)
    full = model.logits(tokens, va, 1)
    assert full.shape == (20, tk.VOCAB_SIZE)
    decoder = model.decoder(1)
    rows = [decoder.prefill(tokens[:15], va[:15], keep_all=True)]
    rows += [decoder.step(int(tokens[i]), va[i])[None].copy() for i in range(15, 20)]
    assert np.allclose(np.concatenate(rows), full, atol=1e-4)
    assert decoder.position == 20 and int((decoder.bias == 0).sum()) == 20


def test_sliding_cache_forgets_what_left_the_window(model: ContinuationModel) -> None:
    """With 4 slots, a token sees 4 earlier ones per layer: two sequences that differ only in
    their first token agree exactly once it is more than layers x 4 tokens back, and not before."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(tk.NOTE_BASE, tk.VOCAB_SIZE, 40)
    other = tokens.copy()
    other[0] = tk.SHIFT_BASE if tokens[0] != tk.SHIFT_BASE else tk.BAR
    decoders = [model.decoder(0, slots=4), model.decoder(0, slots=4)]
    for decoder, sequence in zip(decoders, (tokens, other)):
        decoder.prefill(sequence[:1], np.zeros((1, 2), np.float32))
    horizon = model.layers * 4
    for i in range(1, 40):
        first, second = (d.step(int(tokens[i])).copy() for d in decoders)
        if i == 1:
            assert not np.allclose(first, second, atol=1e-4)
        if i > horizon:
            assert np.array_equal(first, second), i


def test_generation_closes_every_note(model: ContinuationModel) -> None:
    config = SamplingConfig(
        temperature=1.0,
        top_p=0.95,
        seed=3,
        pitch_classes=scale_pitch_classes(0, "major"),
        max_polyphony=4,
        max_note_steps=48,
    )
    prompt = [
        tk.SOS,
        tk.BAR,
        tk.VELOCITY_BASE + 18,
        tk.note_token(tk.RIGHT, tk.NOTE_ON, 72),
        tk.note_token(tk.LEFT, tk.NOTE_ON, 48),
        tk.SHIFT_BASE + 11,
        tk.note_token(tk.RIGHT, tk.NOTE_OFF, 72),
        tk.note_token(tk.LEFT, tk.NOTE_OFF, 48),
    ]
    result = generate(model, prompt, bars=1, config=config, max_tokens=300)
    notes, _, repaired = tk.decode(result.tokens)
    assert repaired == 0 and result.tokens
    assert all(n.pitch % 12 in config.pitch_classes and n.duration_steps <= 48 for n in notes)


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / DEFAULT_MODEL.name
    shutil.copy(DEFAULT_MODEL, copy)
    card = json.loads(DEFAULT_MODEL.with_name("continuation.card.json").read_text())
    card["sha256"] = "0" * 64
    (tmp_path / "continuation.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="sha256"):
        ContinuationModel.load(copy)
    (tmp_path / "continuation.card.json").unlink()
    with pytest.raises(ModelLoadError, match="card"):
        ContinuationModel.load(copy)


def test_fixed_shape_steps_give_the_dynamic_sessions_logits_bit_for_bit(model: ContinuationModel) -> None:
    """The step session (free dimensions fixed, shape arithmetic folded) must not change a single
    logit, or a fixed seed would no longer give the same continuation."""
    from dataclasses import replace

    assert model.step_session is not None
    rng = np.random.default_rng(3)
    prompt = rng.integers(tk.NOTE_BASE, tk.VOCAB_SIZE, 300)  # longer than the cache: the ring wraps
    fast, dynamic = model.decoder(0), replace(model, step_session=None).decoder(0)
    va = np.zeros((len(prompt), 2), np.float32)
    assert np.array_equal(fast.prefill(prompt, va), dynamic.prefill(prompt, va))
    for index, token in enumerate(rng.integers(tk.NOTE_BASE, tk.VOCAB_SIZE, 300)):
        wanted = (np.sin(index / 7), 0.3)
        assert np.array_equal(fast.step(int(token), wanted), dynamic.step(int(token), wanted)), index
    assert np.array_equal(fast.cache[-1], dynamic.cache[-1]) and fast.position == dynamic.position == 600


def test_fixed_seed_generation_is_the_same_on_both_sessions(model: ContinuationModel) -> None:
    from dataclasses import replace

    prompt = [tk.SOS, *tk.encode([tk.NoteEvent(6 * i, i % 2, 60 + i % 7, 6, 80) for i in range(32)], [0, 48, 96, 144])]
    config = SamplingConfig(seed=11, top_p=0.95, key_bias=4.0, pattern_bias=4.0, motif_bias=3.0, density_bias=4.0)
    fast = generate(model, prompt, 4, config).tokens
    assert fast == generate(replace(model, step_session=None), prompt, 4, config).tokens


def test_decoders_on_several_threads_share_one_model_and_give_one_threads_tokens(model: ContinuationModel) -> None:
    """One model, four threads, each generating with its own decoder on the shared step session
    (each run under the model's lock) while the main thread keeps building and dropping decoders
    (new bindings of the same session): every thread gets the tokens a lone thread gets."""
    import threading

    prompt = [tk.SOS, *tk.encode([tk.NoteEvent(6 * i, i % 2, 60 + i % 7, 6, 80) for i in range(24)], [0, 48, 96])]
    configs = [SamplingConfig(seed=seed, density_bias=4.0, pattern_bias=4.0) for seed in range(4)]
    expected = [generate(model, prompt, 2, config).tokens for config in configs]
    got: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            got[index] = generate(model, prompt, 2, configs[index]).tokens
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(configs))]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        model.decoder(0).step(tk.BAR)  # a binding made, run and freed beside the generations
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert [got[index] for index in range(len(configs))] == expected
