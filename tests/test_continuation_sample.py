"""Constrained sampling: the constraints hold for any logits (pure logic; a fake model here,
the real ONNX model in test_continuation_onnx.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engines.continuation import tokens as tk
from engines.continuation.sample import SamplingConfig, generate, sample_token, scale_pitch_classes


class RandomLogitsModel:
    """Stands in for runtime.ContinuationModel: seeded random logits favouring notes and shifts."""

    valence_lead = 0

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.bias = np.zeros(tk.VOCAB_SIZE)
        self.bias[tk.NOTE_BASE : tk.VELOCITY_BASE] = 2.0
        self.bias[tk.BAR] = -1.0

    def decoder(self, style: int = 0) -> RandomLogitsModel:
        self.slots = 255
        return self

    def _logits(self) -> np.ndarray:
        return (self.rng.normal(0, 2, tk.VOCAB_SIZE) + self.bias).astype(np.float32)

    def prefill(self, tokens, va) -> np.ndarray:
        return self._logits()

    def step(self, token, va) -> np.ndarray:
        return self._logits()


def _check(tokens: list[int], config: SamplingConfig) -> tuple[list[tk.NoteEvent], int]:
    held: dict[tuple[int, int], int] = {}
    now, peak = 0, {tk.RIGHT: 0, tk.LEFT: 0}
    for token in tokens:
        assert token not in (tk.PAD, tk.SOS, tk.EOS, tk.UNK)
        if tk.is_shift(token):
            now += tk.shift_steps(token)
        elif tk.is_note(token):
            hand, kind, pitch = tk.parse_note_token(token)
            if kind == tk.NOTE_ON:
                assert (hand, pitch) not in held
                held[(hand, pitch)] = now
                peak[hand] = max(peak[hand], sum(1 for h, _ in held if h == hand))
            else:
                assert (hand, pitch) in held
                assert now - held.pop((hand, pitch)) <= config.max_note_steps
    assert not held, "every NOTE_ON must be closed"
    assert max(peak.values()) <= config.max_polyphony
    notes, _, repaired = tk.decode(tokens)
    assert repaired == 0
    velocity_then = [b for a, b in itertools.pairwise(tokens) if tk.is_velocity(a)]
    assert all(tk.is_note(t) and tk.parse_note_token(t)[1] == tk.NOTE_ON for t in velocity_then)
    return notes, sum(1 for t in tokens if t == tk.BAR)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generation_respects_every_constraint(seed: int) -> None:
    config = SamplingConfig(
        temperature=1.2,
        top_k=40,
        top_p=0.95,
        seed=seed,
        pitch_classes=scale_pitch_classes(2, "major"),
        right_range=(60, 84),
        left_range=(36, 59),
        max_polyphony=3,
        max_note_steps=24,
    )
    prompt = [tk.SOS, tk.note_token(tk.RIGHT, tk.NOTE_ON, 62), tk.SHIFT_BASE + 5]
    result = generate(RandomLogitsModel(seed), prompt, bars=2, config=config, max_tokens=400)
    notes, bars = _check(prompt[1:] + result.tokens, config)
    assert bars == result.bars == 2
    assert tk.decode(prompt[1:] + result.tokens)[1] == [48, 96]  # bar lines on the 4/4 grid, nowhere else
    generated = [n for n in notes if n.onset_steps > 0]
    assert generated, "the fake model favours notes; some must come out"
    for note in generated:
        assert note.pitch % 12 in config.pitch_classes
        low, high = config.right_range if note.hand == tk.RIGHT else config.left_range
        assert low <= note.pitch <= high


def test_same_seed_same_output_and_different_seed_differs() -> None:
    config = SamplingConfig(seed=5)
    first = generate(RandomLogitsModel(0), [tk.SOS], bars=1, config=config, max_tokens=200).tokens
    again = generate(RandomLogitsModel(0), [tk.SOS], bars=1, config=config, max_tokens=200).tokens
    other = generate(
        RandomLogitsModel(0), [tk.SOS], bars=1, config=SamplingConfig(seed=6), max_tokens=200
    ).tokens
    assert first == again and first != other


def test_top_k_top_p_and_mask() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([5.0, 4.0, 0.0, -1.0, 10.0])
    allowed = np.array([True, True, True, True, False])
    picks = {sample_token(logits, allowed, SamplingConfig(top_k=2), rng) for _ in range(200)}
    assert picks == {0, 1}
    assert {sample_token(logits, allowed, SamplingConfig(top_p=0.5), rng) for _ in range(50)} == {0}
    with pytest.raises(ValueError, match="no token"):
        sample_token(logits, np.zeros(5, dtype=bool), SamplingConfig(), rng)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError):
        SamplingConfig(right_range=(10, 60))
    with pytest.raises(ValueError):
        scale_pitch_classes(0, "dorianish")


def test_runtime_modules_import_neither_torch_nor_music21() -> None:
    import subprocess
    import sys

    from tests.jackutil import ROOT

    modules = (
        "engines.continuation, engines.continuation.sample, engines.continuation.runtime, "
        "engines.continuation.offline, engines.continuation.live, engines.continuation.engine, "
        "engines.continuation.noise_probe, cli.continue_, cli.eval_noise"
    )
    code = f"import sys, {modules}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'music21'}}))"
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_midi_round_trip_keeps_hands_and_grid_times(tmp_path) -> None:
    from engines.continuation.offline import read_midi, write_midi

    notes = tk.canonicalize(
        [
            tk.NoteEvent(0, tk.RIGHT, 72, 12, 80),
            tk.NoteEvent(0, tk.LEFT, 72, 24, 40),
            tk.NoteEvent(18, tk.LEFT, 40, 4, 100),
            tk.NoteEvent(50, tk.RIGHT, 55, 30, 64),
        ]
    )[0]
    path = tmp_path / "two_hands.mid"
    write_midi(notes, path, bar_steps=36, tempo=600000)
    read, bar_steps, tempo = read_midi(path)
    assert read == notes and bar_steps == 36 and tempo == 600000


def test_offline_continuation_starts_at_the_next_bar_line() -> None:
    from engines.continuation.offline import continue_notes

    notes = [tk.NoteEvent(0, tk.RIGHT, 72, 12, 80), tk.NoteEvent(60, tk.LEFT, 48, 10, 80)]
    generated = continue_notes(
        RandomLogitsModel(1), notes, bar_steps=48, bars=2, config=SamplingConfig(seed=1)
    )
    assert generated and min(n.onset_steps for n in generated) >= 96
    assert max(n.end_steps for n in generated) <= 96 + 2 * 48 + 1


def test_mode_steering_moves_only_the_split_of_each_major_minor_pair() -> None:
    from engines.continuation.sample import mode_pairs, steer_mode

    major, minor = mode_pairs(0)  # C: E/Eb, A/Ab, B/Bb in both hands
    assert tk.note_token(tk.RIGHT, tk.NOTE_ON, 64) in major and tk.note_token(tk.RIGHT, tk.NOTE_ON, 63) in minor
    assert tk.note_token(tk.LEFT, tk.NOTE_ON, 45) in major and tk.note_token(tk.LEFT, tk.NOTE_ON, 44) in minor
    assert tk.note_token(tk.RIGHT, tk.NOTE_ON, 60) not in major and tk.note_token(tk.RIGHT, tk.NOTE_ON, 62) not in minor
    logits = np.random.default_rng(3).normal(size=tk.VOCAB_SIZE)
    darker = steer_mode(logits, (major, minor), -2.4)
    pair_mass = np.logaddexp(logits[major], logits[minor])
    assert np.allclose(np.logaddexp(darker[major], darker[minor]), pair_mass), "each pair keeps its probability"
    assert np.allclose((darker[major] - darker[minor]) - (logits[major] - logits[minor]), -2.4)
    untouched = np.setdiff1d(np.arange(tk.VOCAB_SIZE), np.r_[major, minor])
    assert np.array_equal(darker[untouched], logits[untouched])
    assert np.allclose(steer_mode(logits, (major, minor), 0.0), logits)


def test_negative_valence_with_steering_turns_a_major_prompt_minor() -> None:
    from engines.continuation.sample import MODE_STEER, generate

    prompt = [tk.SOS] + tk.encode(
        tk.canonicalize(
            [tk.NoteEvent(12 * i, tk.RIGHT, p, 12, 80) for i, p in enumerate([60, 64, 67, 72, 71, 69, 67, 64] * 2)]
            + [tk.NoteEvent(48 * i, tk.LEFT, 48, 48, 70) for i in range(4)]
        )[0],
        [0, 48, 96, 144],
    )

    def share_minor(valence: float, steer: float) -> float:
        counts = np.zeros(12)
        for seed in range(4):
            config = SamplingConfig(seed=seed, bar_steps=48, mode_steer=steer)
            notes = tk.decode(generate(RandomLogitsModel(seed), prompt, 2, config, va=(valence, 0.0)).tokens)[0]
            counts += np.bincount([n.pitch % 12 for n in notes], minlength=12)
        return counts[[3, 8, 10]].sum() / counts[[3, 4, 8, 9, 10, 11]].sum()

    assert share_minor(-0.8, MODE_STEER) > share_minor(0.0, MODE_STEER) + 0.15
    assert share_minor(0.8, MODE_STEER) < share_minor(0.0, MODE_STEER) - 0.15
    with pytest.raises(ValueError, match="mode_steer"):
        SamplingConfig(mode_steer=-1.0)


def test_steering_leaves_pairs_a_scale_mask_splits_alone() -> None:
    from engines.continuation.sample import mode_pairs

    major, minor = mode_pairs(0)
    assert len(major) == len(minor) > 0
    assert [len(p) for p in mode_pairs(0, scale_pitch_classes(0, "major"))] == [0, 0]  # Eb, Ab, Bb not allowed
    chromatic = mode_pairs(0, scale_pitch_classes(0, "chromatic"))
    assert np.array_equal(chromatic[0], major) and np.array_equal(chromatic[1], minor)


def test_offline_continuation_steers_only_a_valence_the_user_sets() -> None:
    from engines.continuation.offline import continue_notes

    notes = tk.canonicalize(
        [tk.NoteEvent(12 * i, tk.RIGHT, p, 12, 80) for i, p in enumerate([60, 64, 67, 72, 71, 69, 67, 64] * 2)]
    )[0]

    def run(steer: float, va=None, labels: str = "target") -> list:
        config = SamplingConfig(seed=5, mode_steer=steer)
        return continue_notes(RandomLogitsModel(5), notes, 48, 2, config, context_bars=2, va=va, prompt_labels=labels)

    assert run(8.0) == run(0.0), "no valence asked for (the music's own): no steering"
    assert run(8.0, (-0.8, 0.0)) != run(0.0, (-0.8, 0.0))
    with pytest.raises(ValueError, match="prompt_labels"):
        run(0.0, (0.5, 0.0), labels="ahead")


def test_announce_labels_move_the_prompt_end_toward_the_target() -> None:
    from engines.continuation.offline import announce_labels

    prompt = [tk.SOS] + [tk.SHIFT_BASE + 11] * 16  # 16 quarters, one token per quarter
    labels = np.full((len(prompt), 2), 0.5, dtype=np.float32)
    centred = announce_labels(labels, prompt, (-1.0, 1.0), valence_lead=0)
    ahead = announce_labels(labels, prompt, (-1.0, 1.0), valence_lead=4)
    assert np.allclose(centred[:12], 0.5) and np.allclose(ahead[:8, 0], 0.5)  # windows inside the prompt
    assert centred[-1, 0] < 0.5 and centred[-1, 1] > 0.5  # the last window reaches past the end
    assert np.all(np.diff(ahead[:, 0]) <= 1e-6) and ahead[-1, 0] < centred[-1, 0], "the look-ahead moves sooner"
    assert np.allclose(ahead[:, 1], centred[:, 1]), "arousal has no lead"


def test_prompt_register_widens_each_hands_range_by_the_margin() -> None:
    from engines.continuation.sample import prompt_register

    notes = [tk.NoteEvent(0, tk.RIGHT, 70, 12, 80), tk.NoteEvent(12, tk.RIGHT, 79, 12, 80),
             tk.NoteEvent(0, tk.LEFT, 24, 24, 80)]
    prompt = [tk.SOS, *tk.encode(notes, [0])]
    config = prompt_register(prompt, SamplingConfig(seed=1))
    assert config.right_range == (65, 84) and config.left_range == (21, 29)  # clamped to the keyboard
    only_right = prompt_register([tk.SOS, *tk.encode(notes[:2], [0])], SamplingConfig(), margin=2)
    assert only_right.right_range == (68, 81) and only_right.left_range == SamplingConfig().left_range
    assert config.register_medians == (74.5, 24.0) and only_right.register_medians == (74.5, None)
    # the medians of the notes as played: a doubled note (merged in the tokens) counts twice
    doubled = prompt_register(prompt, SamplingConfig(), played=notes + [notes[0], notes[0]])
    assert doubled.register_medians == (70.0, 24.0) and doubled.right_range == config.right_range
    tokens = generate(RandomLogitsModel(3), prompt, 2, config).tokens
    played = tk.decode(tokens)[0]
    assert played and all(
        (65 <= n.pitch <= 84) if n.hand == tk.RIGHT else (21 <= n.pitch <= 29) for n in played
    )


def test_key_penalty_lowers_only_note_ons_outside_the_key() -> None:
    from engines.continuation.sample import key_penalty

    penalty = key_penalty(0, True, 2.0)  # C major
    for hand in (tk.RIGHT, tk.LEFT):
        assert penalty[tk.note_token(hand, tk.NOTE_ON, 61)] == -2.0  # C#
        assert penalty[tk.note_token(hand, tk.NOTE_ON, 60)] == 0.0
        assert penalty[tk.note_token(hand, tk.NOTE_OFF, 61)] == 0.0
    assert np.count_nonzero(penalty) == 2 * sum(p % 12 in (1, 3, 6, 8, 10) for p in range(21, 109))
    a_minor = key_penalty(9, False, 1.0)  # natural minor + F# and G#
    assert a_minor[tk.note_token(tk.RIGHT, tk.NOTE_ON, 68)] == 0.0  # G#
    assert a_minor[tk.note_token(tk.RIGHT, tk.NOTE_ON, 70)] == -1.0  # B-flat
    notes = [tk.NoteEvent(12 * i, tk.RIGHT, p, 12, 80) for i, p in enumerate((60, 64, 67, 72, 65, 62, 71, 60))]
    prompt = [tk.SOS, *tk.encode(notes, [0, 48])]
    played = {True: 0, False: 0}
    for seed in range(3):
        for bias in (0.0, 8.0):
            tokens = generate(RandomLogitsModel(seed), prompt, 2, SamplingConfig(seed=seed, key_bias=bias)).tokens
            played[bias > 0] += sum(n.pitch % 12 not in {0, 2, 4, 5, 7, 9, 11} for n in tk.decode(tokens)[0])
    assert played[True] < played[False] / 4, played


def _times_in_bar(tokens: list[int], bar_steps: int) -> set[int]:
    """Steps into the bar of every NOTE_ON and NOTE_OFF of generated tokens (bar lines at 0)."""
    now, times = 0, set()
    for token in tokens:
        if tk.is_shift(token):
            now += tk.shift_steps(token)
        elif tk.is_note(token):
            times.add(now % bar_steps)
    return times


def test_prompt_grid_keeps_a_straight_or_triplet_prompt_on_its_grid() -> None:
    from engines.continuation.sample import prompt_grid

    straight = [tk.NoteEvent(3 * i, tk.RIGHT, 60 + i % 5, 3, 80) for i in range(32)]  # 16ths, 2 bars
    triplets = [tk.NoteEvent(4 * i, tk.LEFT, 48 + i % 3, 4, 80) for i in range(24)]  # eighth triplets
    swung = straight[::2] + triplets[1::3]  # eighths and triplet upbeats: only the union holds them
    played = [tk.NoteEvent(i * 5 + i % 2, tk.RIGHT, 60, 2, 80) for i in range(16)]  # played timing
    grids = {}
    for name, notes in (("straight", straight), ("triplets", triplets), ("swung", swung), ("played", played)):
        grids[name] = prompt_grid([tk.SOS, *tk.encode(notes, [0, 48])], SamplingConfig(seed=1)).time_grid
    assert grids["straight"] == frozenset(range(0, 48, 3)) and grids["triplets"] == frozenset(range(0, 48, 4))
    assert grids["swung"] == frozenset(range(0, 48, 3)) | frozenset(range(0, 48, 4))
    assert grids["played"] is None  # no grid holds 95 % of its onsets: any step
    held = [tk.NoteEvent(0, tk.LEFT, 40, 30, 80)] + straight  # the longest prompt note: 30 steps
    assert prompt_grid([tk.SOS, *tk.encode(sorted(held), [0, 48])], SamplingConfig()).max_note_steps == 30
    assert prompt_grid([tk.SOS, *tk.encode(straight, [0, 48])], SamplingConfig()).max_note_steps == 12  # a beat
    for seed in range(3):
        for name in ("straight", "triplets"):
            config = SamplingConfig(seed=seed, time_grid=grids[name])
            prompt = [tk.SOS, *tk.encode(straight if name == "straight" else triplets, [0, 48])]
            tokens = generate(RandomLogitsModel(seed), prompt, 2, config).tokens
            _check(tokens, config)
            assert _times_in_bar(tokens, 48) <= grids[name], (name, seed)
        free = generate(RandomLogitsModel(seed), [tk.SOS, *tk.encode(straight, [0, 48])], 2,
                        SamplingConfig(seed=seed)).tokens
        assert not _times_in_bar(free, 48) <= grids["straight"]  # without the grid the fake model strays
        # a note cap off the grid's spacing (the prompt's longest note 17 steps, unquantized as in
        # POP909): a note reaching it is released on the grid, time does not leave the grid
        capped = SamplingConfig(seed=seed, time_grid=grids["straight"], max_note_steps=17)
        tokens = generate(RandomLogitsModel(seed), [tk.SOS, *tk.encode(straight, [0, 48])], 4, capped).tokens
        _check(tokens, capped)
        assert _times_in_bar(tokens, 48) <= grids["straight"], seed


def test_pattern_bias_keeps_each_hands_rhythm() -> None:
    from engines.continuation.sample import Stream, prompt_onsets

    bass = [tk.NoteEvent(24 * i, tk.LEFT, 40, 12, 80) for i in range(4)]  # beats 1 and 3
    tune = [tk.NoteEvent(6 * i, tk.RIGHT, 72, 6, 80) for i in range(16)]  # eighths
    prompt = [tk.SOS, *tk.encode(sorted(bass + tune), [0, 48])]
    assert prompt_onsets(prompt, 48) == (frozenset(range(0, 48, 6)), frozenset({0, 24}))
    late = [tk.NoteEvent(48 + 12, tk.LEFT, 43, 36, 80)]  # on beat 2 of the second bar, to its end
    both = [tk.SOS, *tk.encode(sorted(bass[:2] + tune[:8] + late), [0, 48])]
    assert prompt_onsets(both, 48, last_bars=1)[1] == frozenset({12})  # only the last bar's
    left_on, right_on = tk.note_token(tk.LEFT, tk.NOTE_ON, 40), tk.note_token(tk.RIGHT, tk.NOTE_ON, 72)
    stream = Stream(RandomLogitsModel(0), prompt, 2, SamplingConfig(seed=0, pattern_bias=2.0))
    assert stream.state.now_steps % 48 == 0  # on the bar line: both hands struck here in the prompt
    pulled = stream._scores() - stream.logits  # until each hand strikes, its notes are pulled here
    assert pulled[left_on] == pulled[right_on] == pytest.approx(1.0)
    stream.state.advance(tk.SHIFT_BASE + 2)  # three steps in: neither hand struck there
    moved = stream._scores() - stream.logits
    assert moved[left_on] == moved[right_on] == pytest.approx(-2.0)
    assert moved[tk.VELOCITY_BASE] == pytest.approx(-2.0)  # a velocity commits to a note: it moves too
    assert np.count_nonzero(moved) == 2 * 88 + tk.SHIFT_BASE - tk.VELOCITY_BASE
    stream.state.advance(tk.SHIFT_BASE + 2)  # step 6: the right hand struck there, the left did not
    moved = stream._scores() - stream.logits
    assert moved[right_on] == pytest.approx(1.0) and moved[left_on] == pytest.approx(-2.0)
    assert moved[tk.VELOCITY_BASE] == pytest.approx(1.0)


def test_motif_bias_echoes_the_prompts_melodic_steps() -> None:
    tune = [tk.NoteEvent(12 * i, tk.RIGHT, p, 12, 80) for i, p in enumerate([60, 62, 64, 60] * 2)]
    prompt = [tk.SOS, *tk.encode(tune, [0, 48])]
    echoes = {0.0: 0, 8.0: 0}
    for seed in range(12):
        for bias in echoes:
            tokens = generate(RandomLogitsModel(seed), prompt, 2, SamplingConfig(seed=seed, motif_bias=bias,
                                                                                  max_polyphony=1)).tokens
            line = [n.pitch for n in sorted(tk.decode(tokens)[0]) if n.hand == tk.RIGHT]
            echoes[bias] += sum(b - a in (2, -4) for a, b in itertools.pairwise(line))  # the prompt's steps
    assert echoes[8.0] >= 3 * max(1, echoes[0.0]) + 3, echoes


def test_density_bias_keeps_each_hand_near_the_prompts_onsets_per_bar() -> None:
    from engines.continuation.sample import Stream

    quarters = [tk.NoteEvent(12 * i, tk.RIGHT, 72, 12, 80) for i in range(8)]  # 4 onsets a bar
    bass = [tk.NoteEvent(48 * i, tk.LEFT, 40, 48, 80) for i in range(2)]  # 1 onset a bar
    prompt = [tk.SOS, *tk.encode(sorted(quarters + bass), [0, 48])]
    stream = Stream(RandomLogitsModel(0), prompt, 2, SamplingConfig(seed=0, density_bias=4.0))
    left_on, right_on = tk.note_token(tk.LEFT, tk.NOTE_ON, 40), tk.note_token(tk.RIGHT, tk.NOTE_ON, 72)
    keeper = stream.scorer.density
    assert keeper.rate == [pytest.approx(4 / 48), pytest.approx(1 / 48)]
    start = stream.state.now_steps
    assert keeper.shift(tk.RIGHT, start, 4.0, 48) == keeper.shift(tk.LEFT, start, 4.0, 48) == 0.0  # on schedule
    for step in range(4):  # the left hand strikes four times in its first beat: two bars' worth
        keeper.advance(left_on, start + step)
    assert keeper.shift(tk.LEFT, start + 12, 4.0, 48) == pytest.approx(-4.0)  # far ahead: the whole bias off
    assert keeper.shift(tk.RIGHT, start + 12, 4.0, 48) == pytest.approx(2.0)  # a beat behind, of half a bar
    assert keeper.shift(tk.LEFT, start + 3, 4.0, 48) == 0.0  # it struck at this step: chords are not cut
    stream.state.advance(tk.SHIFT_BASE + 11)
    assert (stream._scores() - stream.logits)[right_on] == pytest.approx(2.0)


@pytest.mark.parametrize(("note_bias", "bar_steps"), [(-6.0, 48), (2.0, 48), (6.0, 48), (-6.0, 36), (6.0, 36)])
def test_density_keeper_holds_every_hand_within_half_to_twice_the_prompts_onsets(note_bias: float,
                                                                                   bar_steps: int) -> None:
    """Whatever the model prefers (a fake one that shuns notes, or that wants them everywhere), each
    hand's onsets per bar end within 0.5-2x the prompt's, and a hand that played every prompt bar
    sounds in every new bar: in 4/4 and 3/4, with the rhythm pattern and the prompt's 16th grid."""
    from engines.continuation.biases import DENSITY_BOUNDS

    beats = bar_steps // 12
    tune = [tk.NoteEvent(12 * i, tk.RIGHT, 72 + (i % 3) * 2, 12, 80) for i in range(4 * beats)]  # a beat each
    bass = [tk.NoteEvent(bar_steps * i, tk.LEFT, 40, 24, 80) for i in range(4)]  # 1 onset a bar
    prompt = [tk.SOS, *tk.encode(sorted(tune + bass), [bar_steps * i for i in range(5)])]
    grid = frozenset(range(0, bar_steps, 3))
    for seed in range(6):
        model = RandomLogitsModel(seed)
        model.bias[tk.NOTE_BASE : tk.VELOCITY_BASE] = note_bias
        config = SamplingConfig(seed=seed, density_bias=4.0, pattern_bias=4.0, max_note_steps=17, time_grid=grid,
                                bar_steps=bar_steps)
        result = generate(model, prompt, 4, config)
        notes, bars = _check(result.tokens, config)
        assert bars == 4 and _times_in_bar(result.tokens, bar_steps) <= grid
        for hand, prompt_per_bar in ((tk.RIGHT, beats), (tk.LEFT, 1)):
            onsets = {n.onset_steps for n in notes if n.hand == hand}
            ratio = len(onsets) / 4 / prompt_per_bar
            assert DENSITY_BOUNDS[0] <= ratio <= DENSITY_BOUNDS[1], (note_bias, seed, hand, ratio)
            sounding = {bar for n in notes if n.hand == hand
                        for bar in range(n.onset_steps // bar_steps, (n.end_steps - 1) // bar_steps + 1)}
            assert sounding >= set(range(4)), (note_bias, seed, hand, sorted(sounding))
    free = generate(RandomLogitsModel(0), prompt, 4,
                    SamplingConfig(seed=0, max_note_steps=17, bar_steps=bar_steps)).tokens
    left = {n.onset_steps for n in tk.decode(free)[0] if n.hand == tk.LEFT}
    assert len(left) / 4 > DENSITY_BOUNDS[1], "without the keeper the fake model overplays the left hand"


def test_first_new_bars_repeat_each_hands_rhythm_bar_by_bar() -> None:
    """The prompt's last two bars, repeated: in the first PATTERN_HOLD_BARS new bars a hand starts
    notes only where it did in the prompt bar the new bar repeats; later the pattern is soft."""
    from engines.continuation.biases import PATTERN_HOLD_BARS
    from engines.continuation.prompt_style import prompt_bar_onsets

    tune = [tk.NoteEvent(6 * i, tk.RIGHT, 72 + i % 4, 6, 80) for i in range(32)]  # eighths
    bass = []
    for bar in range(4):  # bars 0, 2: beats 1 and 3; bars 1, 3: beats 1, 2 and the last eighth
        steps = (0, 24) if bar % 2 == 0 else (0, 12, 42)
        bass += [tk.NoteEvent(48 * bar + s, tk.LEFT, 40 + s % 5, 6, 80) for s in steps]
    prompt = [tk.SOS, *tk.encode(sorted(tune + bass), [0, 48, 96, 144, 192])]
    templates = prompt_bar_onsets(prompt, 48, 2)
    assert templates[0][tk.LEFT] == frozenset({0, 24}) and templates[1][tk.LEFT] == frozenset({0, 12, 42})
    later_off = 0
    for seed in range(5):
        model = RandomLogitsModel(seed)
        model.bias[tk.NOTE_BASE : tk.VELOCITY_BASE] = 4.0  # a fake model that wants notes everywhere
        tokens = generate(model, prompt, 4, SamplingConfig(seed=seed, pattern_bias=4.0)).tokens
        for note in tk.decode(tokens)[0]:
            bar, step = divmod(note.onset_steps, 48)
            if bar < PATTERN_HOLD_BARS:
                assert step in templates[bar % 2][note.hand], (seed, note)
            else:
                later_off += step not in templates[bar % 2][note.hand]
    assert later_off > 0, "after the first bars the pattern is a bias, not a rule"


@pytest.mark.parametrize("side", [1, -1])
def test_median_keeper_holds_each_hands_median_within_an_octave_of_the_prompts(side: int) -> None:
    """A fake model that wants every note at the far end of a wide prompt range: with the prompt
    register (``register_medians``) each hand's new notes keep their median within 12 semitones of
    the prompt's, yet still reach past the octave; without the keeper they leave it."""
    from engines.continuation.sample import prompt_register

    tune = [tk.NoteEvent(12 * i, tk.RIGHT, pitch, 12, 80)  # a wide tune around 72: 60..84
            for i, pitch in enumerate([72, 71, 72, 74, 72, 60, 84, 72])]
    bass = [tk.NoteEvent(24 * i, tk.LEFT, pitch, 24, 80) for i, pitch in enumerate([48, 47, 48, 33])]
    prompt = [tk.SOS, *tk.encode(sorted(tune + bass), [0, 48])]
    medians = {tk.RIGHT: 72.0, tk.LEFT: 47.5}
    for seed in range(4):
        model = RandomLogitsModel(seed)
        far = np.zeros(tk.VOCAB_SIZE)
        for hand in (tk.RIGHT, tk.LEFT):
            for pitch in range(tk.LOW_PITCH, tk.HIGH_PITCH + 1):  # the further from the middle C, the likelier
                far[tk.note_token(hand, tk.NOTE_ON, pitch)] = 0.6 * side * (pitch - 60)
        model.bias = model.bias + far
        kept = prompt_register(prompt, SamplingConfig(seed=seed, max_note_steps=17))
        assert kept.register_medians == (72.0, 47.5)
        runs = {"kept": kept, "free": SamplingConfig(seed=seed, max_note_steps=17, right_range=kept.right_range,
                                                      left_range=kept.left_range)}
        for name, config in runs.items():
            notes, _ = _check(generate(model, prompt, 4, config).tokens, config)
            for hand, median in medians.items():
                pitches = [n.pitch for n in notes if n.hand == hand]
                assert pitches, (name, seed, hand)
                shift = float(np.median(pitches)) - median
                if name == "kept":
                    assert abs(shift) <= 12, (seed, hand, shift)
                    if hand == tk.RIGHT:  # the keeper bounds the median, not each note
                        assert any(abs(p - median) > 12 for p in pitches), (seed, sorted(pitches))
                elif hand == tk.RIGHT:
                    assert abs(shift) > 12, ("without the keeper the fake model leaves the octave", seed, shift)
