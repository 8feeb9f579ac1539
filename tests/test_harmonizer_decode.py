"""Decoding strategies with a fake logits function (pure logic; the ORT path is in test_harmonizer_onnx)."""

import numpy as np
import pytest

from engines.harmonizer import decode as d
from engines.harmonizer.vocab import BAR, MASK, NC, PAD, VOCAB_SIZE, token_id

C, G = token_id("C:maj"), token_id("G:maj")
LENGTH = 16


class FakeModel:
    """Prefers `token` everywhere; sharpness grows with position so 'certain' has a clear order."""

    def __init__(self, token: int = C, sharp_from_end: bool = False) -> None:
        self.token = token
        self.sharp_from_end = sharp_from_end
        self.calls = 0

    def __call__(self, harmony: np.ndarray) -> np.ndarray:
        self.calls += 1
        logits = np.zeros((len(harmony), VOCAB_SIZE))
        sharpness = np.arange(len(harmony), dtype=float) + 1.0
        if self.sharp_from_end:
            sharpness = sharpness[::-1]
        logits[:, self.token] = sharpness
        logits[:, G] = 0.5 * sharpness  # a runner-up so entropies differ by position
        return logits


def masked_row(bar_every: int = 0) -> np.ndarray:
    row = np.full(LENGTH, MASK, dtype=np.int64)
    if bar_every:
        row[::bar_every] = BAR
    return row


@pytest.mark.parametrize("strategy", d.STRATEGIES)
def test_every_strategy_fills_all_masks_and_keeps_bars(strategy: str) -> None:
    fake = FakeModel()
    result = d.fill_masks(
        fake,
        masked_row(bar_every=4),
        last_melody_position=LENGTH - 1,
        strategy=strategy,
        rng=np.random.default_rng(0),
        calls=4,
    )
    assert not (result.harmony == MASK).any()
    assert (result.harmony[::4] == BAR).all()
    assert result.calls == fake.calls == len(result.committed)
    assert sorted(p for call in result.committed for p in call) == [p for p in range(LENGTH) if p % 4]


def test_call_counts_per_strategy() -> None:
    rng = np.random.default_rng(0)
    assert d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "start", rng).calls == LENGTH
    assert d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "stages10", rng, calls=10).calls == 10
    assert d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "entropic", rng, calls=4).calls <= 4
    # midpoint doubling on 16 positions: spacing 16, 8, 4, 2, 1 -> 5 calls
    midpoint = d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "midpoint", rng)
    assert midpoint.committed[:3] == [[0], [8], [4, 12]]
    assert midpoint.calls == 5


def test_position_orders() -> None:
    rng = np.random.default_rng(0)
    start = d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "start", rng)
    assert [c[0] for c in start.committed] == list(range(LENGTH))
    end = d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "end", rng)
    assert [c[0] for c in end.committed] == list(range(LENGTH))[::-1]
    # the fake is sharpest (lowest entropy) at the last position
    certain = d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "certain", rng)
    assert [c[0] for c in certain.committed] == list(range(LENGTH))[::-1]
    uncertain = d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, "uncertain", rng)
    assert [c[0] for c in uncertain.committed] == list(range(LENGTH))


def test_pad_and_no_chord_forbidden_before_last_melody_note() -> None:
    result = d.fill_masks(
        FakeModel(token=PAD),
        masked_row(),
        last_melody_position=9,
        strategy="random",
        rng=np.random.default_rng(1),
    )
    assert not np.isin(result.harmony[:10], [PAD, NC]).any()
    assert (result.harmony[10:] == PAD).all()


def test_nucleus_sampling() -> None:
    rng = np.random.default_rng(0)
    allowed = np.ones(VOCAB_SIZE, dtype=bool)
    logits = np.zeros(VOCAB_SIZE)
    logits[C] = 10.0
    assert {d.nucleus_sample(logits, allowed, rng) for _ in range(50)} == {C}
    tied = np.zeros(VOCAB_SIZE)
    tied[[C, G]] = 10.0
    assert {d.nucleus_sample(tied, allowed, rng) for _ in range(200)} == {C, G}
    allowed[C] = False
    assert d.nucleus_sample(logits, allowed, rng) != C
    with pytest.raises(ValueError):
        d.nucleus_sample(logits, np.zeros(VOCAB_SIZE, dtype=bool), rng)


def test_entropic_share_takes_low_entropy_first() -> None:
    masked = np.array([3, 1, 4, 0, 2])
    entropy = np.array([2.0, 0.1, 4.0, 0.1, 1.0])  # by position
    # low entropy first: positions 3, 1 (0.1 each), 4 (1.0), 0 (2.0), 2 (4.0); total 7.2.
    # 2 calls: share 3.6 is reached only with 4.0, but one position must stay for the last call
    assert d._entropic_share(masked, entropy, calls_left=2) == [3, 1, 4, 0]
    # 3 calls: share 2.4, reached at 0.1 + 0.1 + 1.0 + 2.0 = 3.2, capped to leave 2 positions
    assert d._entropic_share(masked, entropy, calls_left=3) == [3, 1, 4]
    # the order of the masked array does not matter, only the entropies
    assert d._entropic_share(np.arange(5), entropy, calls_left=2) == [1, 3, 4, 0]
    assert sorted(d._entropic_share(masked, entropy, calls_left=1)) == [0, 1, 2, 3, 4]


def test_entropies_and_bad_arguments() -> None:
    allowed = d.allowed_tokens(2, last_melody_position=1)
    uniform = d.entropies(np.zeros((2, VOCAB_SIZE)), allowed)
    assert uniform == pytest.approx(np.log(allowed.sum(1)))
    with pytest.raises(ValueError):
        d.fill_masks(FakeModel(), masked_row(), LENGTH - 1, strategy="sideways")
    with pytest.raises(ValueError):
        d.fill_masks(lambda h: np.zeros((3, 3)), masked_row(), LENGTH - 1, strategy="start")
