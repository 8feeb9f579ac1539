"""The SNC mastering model: how the master is predicted from the sum of the decoded stems.

Two kinds (docs/snc.md):

- ``gain``: one gain per channel (lossless files; integer-exact once rounded).
- ``fir-envelope`` (lossy files): per channel, an FIR filter (the mastering EQ, fitted by least
  squares in the frequency domain, ``taps`` long with ``lookahead`` taps before time zero)
  followed by a gain envelope (the bus compressor and limiter), one least-squares gain every
  ``hop`` frames, linearly interpolated between hop centres. Stored in the manifest as
  zlib + base64 (FIR as float16, envelope as int16 steps of ``db_step`` dB, delta-coded);
  ``stored()`` gives the model exactly as a reader will rebuild it.

``ModelStream`` applies either kind block by block with bounded memory; it needs ``history``
frames before and ``lookahead`` frames after each block of the stem mix.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np
from scipy import fft as sfft

from core.errors import CodecError

__all__ = [
    "ENVELOPE_HOPS",
    "FIR_LOOKAHEAD",
    "FIR_TAPS",
    "MAX_ENVELOPE_POINTS",
    "MAX_FIR_TAPS",
    "FirFitter",
    "MasteringModel",
    "ModelStream",
    "envelope_gains",
    "mix_sum",
]

FIR_TAPS = 1024
FIR_LOOKAHEAD = 32
MAX_FIR_TAPS = 8192
ENVELOPE_HOPS = (240, 480, 960, 1920, 4800, 9600)  # each divides 48000
MAX_ENVELOPE_POINTS = 1 << 20  # per channel: bounds what a reader allocates
DB_STEP = 0.02
# The widest model a reader accepts: gains and taps within +-MAX_GAIN and an envelope within
# +-MAX_ENVELOPE_DB (the encoder clips its envelope to +-60 dB), so no model overflows float32.
MAX_GAIN = 1000.0
MAX_ENVELOPE_DB = 120.0
_WELCH = 4096


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 9)).decode("ascii")


def _unpack(text: Any, dtype: str, count: int, where: str) -> np.ndarray:
    """Decode a packed array of exactly ``count`` items, never inflating more than that."""
    if not isinstance(text, str):
        raise CodecError(f"{where}: packed data must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, count * np.dtype(dtype).itemsize + 1)
    except (ValueError, zlib.error) as exc:
        raise CodecError(f"{where}: packed data is corrupt ({exc})") from None
    if not inflater.eof:  # a cut stream inflates to what it still holds, without an error
        raise CodecError(f"{where}: packed data is cut short or longer than {count} items")
    if len(data) != count * np.dtype(dtype).itemsize or inflater.unconsumed_tail or inflater.unused_data:
        raise CodecError(f"{where}: packed data holds {len(data)} bytes, "
                         f"{count * np.dtype(dtype).itemsize} expected")
    return np.frombuffer(data, dtype=dtype)


def mix_sum(parts: list[np.ndarray]) -> np.ndarray:
    """The stem mix, summed in stem order (the encoder and the reader add the same way)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


class MasteringModel:
    """A fitted model; ``to_manifest``/``from_manifest`` convert to and from the manifest."""

    def __init__(self, kind: str, channels: int, gain: np.ndarray | None = None, fir: np.ndarray | None = None,
                 lookahead: int = 0, hop: int = 0, envelope: np.ndarray | None = None) -> None:
        self.kind = kind
        self.channels = channels
        self.gain = np.ones(channels) if gain is None else np.asarray(gain, dtype=np.float64)
        self.fir = fir  # (taps, channels) float64
        self.lookahead = int(lookahead)
        self.hop = int(hop)
        self.envelope = envelope  # (points, channels) linear gains
        taps = 0 if fir is None else fir.shape[0]
        self.history = max(taps - 1 - self.lookahead, 0)
        self._spectra: dict[int, np.ndarray] = {}
        self._planar_spectra: dict[int, np.ndarray] = {}
        self._ramp: np.ndarray | None = None
        self._scratch: np.ndarray | None = None

    def stored(self, frames: int) -> MasteringModel:
        """This model as a reader rebuilds it from the manifest (rounded taps and gains): the
        encoder computes its residual with it, so the loop closes exactly."""
        return MasteringModel.from_manifest(self.to_manifest(), self.channels, frames, "encoder")

    @classmethod
    def gain_only(cls, gain: np.ndarray) -> MasteringModel:
        return cls("gain", len(gain), gain=np.asarray(gain, dtype=np.float64))

    def to_manifest(self) -> dict[str, Any]:
        if self.kind == "gain":
            return {"model": "gain", "gain_per_channel": [float(g) for g in self.gain]}
        steps = np.rint(20 * np.log10(np.clip(self.envelope, 1e-3, 1e3)) / DB_STEP).astype(np.int32)
        deltas = np.diff(steps, axis=0, prepend=np.zeros((1, self.channels), np.int32)).astype(np.int16)
        return {"model": "fir-envelope", "fir_taps": int(self.fir.shape[0]), "fir_lookahead": self.lookahead,
                "fir": _pack(self.fir.astype("<f2")), "envelope_hop": self.hop, "envelope_db_step": DB_STEP,
                "envelope_points": int(self.envelope.shape[0]), "envelope": _pack(deltas.astype("<i2"))}

    @classmethod
    def from_manifest(cls, data: Any, channels: int, frames: int, where: str) -> MasteringModel:
        if not isinstance(data, dict):
            raise CodecError(f"{where}: mastering must be an object")
        kind = data.get("model")
        if kind == "gain":
            gain = data.get("gain_per_channel", [1.0] * channels)
            if (not isinstance(gain, list) or len(gain) != channels
                    or not all(_is_number(g) and abs(g) <= MAX_GAIN for g in gain)):
                raise CodecError(f"{where}: mastering gains must be {channels} finite numbers within "
                                 f"+-{MAX_GAIN:g} (one per channel)")
            unknown = sorted(set(data) - {"model", "gain_per_channel"})
            if unknown:
                raise CodecError(f"{where}: unknown fields {unknown}")
            return cls.gain_only(np.asarray(gain, dtype=np.float64))
        if kind != "fir-envelope":
            raise CodecError(f"{where}: mastering model {kind!r} is not one of gain, fir-envelope")
        fields = ("fir_taps", "fir_lookahead", "envelope_hop", "envelope_points")
        unknown = sorted(set(data) - {"model", "fir", "envelope", "envelope_db_step", *fields})
        if unknown:
            raise CodecError(f"{where}: unknown fields {unknown}")
        missing = [k for k in (*fields, "envelope_db_step") if k not in data]
        if missing:
            raise CodecError(f"{where}: mastering fields are missing: {missing}")
        wrong = [k for k in fields if not isinstance(data[k], int) or isinstance(data[k], bool)]
        if wrong or not _is_number(data["envelope_db_step"]):
            raise CodecError(f"{where}: mastering fields are wrong: {wrong or ['envelope_db_step']} must be "
                             "whole numbers (the step a finite number)")
        taps, lookahead, hop, points = (data[k] for k in fields)
        step = float(data["envelope_db_step"])
        if not 1 <= taps <= MAX_FIR_TAPS or not 0 <= lookahead < taps:
            raise CodecError(f"{where}: FIR of {taps} taps (lookahead {lookahead}) is outside 1..{MAX_FIR_TAPS}")
        if hop not in ENVELOPE_HOPS or points != -(-frames // hop) or points > MAX_ENVELOPE_POINTS:
            raise CodecError(f"{where}: envelope of {points} points every {hop} frames does not fit "
                             f"{frames} frames")
        if not 0.001 <= step <= 1.0:
            raise CodecError(f"{where}: envelope step {step} dB is outside 0.001..1")
        fir = _unpack(data.get("fir"), "<f2", taps * channels, f"{where} FIR").reshape(taps, channels)
        deltas = _unpack(data.get("envelope"), "<i2", points * channels, f"{where} envelope")
        steps = np.cumsum(deltas.reshape(points, channels).astype(np.int64), axis=0)
        if np.abs(steps).max(initial=0) * step > MAX_ENVELOPE_DB:
            raise CodecError(f"{where}: envelope leaves +-{MAX_ENVELOPE_DB:g} dB")
        envelope = (10.0 ** (steps * step / 20.0)).astype(np.float32)
        if not np.all(np.isfinite(fir)) or np.abs(fir).max(initial=0) > MAX_GAIN:
            raise CodecError(f"{where}: FIR holds non-finite taps or taps beyond +-{MAX_GAIN:g}")
        return cls("fir-envelope", channels, fir=fir.astype(np.float64), lookahead=lookahead, hop=hop,
                   envelope=envelope)

    def _filter(self, ext: np.ndarray, n: int, threads: int = 1) -> np.ndarray:
        """Valid FIR convolution: ``ext`` covers [first - history, first + n + lookahead).
        float32 (lossy files only): the encoder and the reader run exactly this code.
        ``threads``: the FFTs' (one channel per thread, the same values)."""
        taps = self.fir.shape[0]
        size = sfft.next_fast_len(ext.shape[0], real=True)
        spectrum = self._spectra.get(size)
        if spectrum is None:
            spectrum = sfft.rfft(self.fir.astype(np.float32), size, axis=0)
            self._spectra = {size: spectrum}
        spectra = sfft.rfft(ext.astype(np.float32, copy=False), size, axis=0, workers=threads)
        spectra *= spectrum  # (in place: the same products, one block-sized array fewer)
        out = sfft.irfft(spectra, size, axis=0, workers=threads)
        return out[taps - 1:taps - 1 + n]

    def gains_at(self, first: int, n: int) -> np.ndarray:
        """Envelope gains (n, channels) for frames [first, first + n): linear between hop centres."""
        return self.gains_planar(first, n).T

    def gains_planar(self, first: int, n: int) -> np.ndarray:
        """Envelope gains (channels, n) for frames [first, first + n). Between the centres of
        hops k and k + 1 (frames k * hop + hop/2 + u, u < hop) the gain is p[k] + (p[k+1] - p[k])
        * ramp[u] in float32, so any block, aligned or not, gets the same values at the same
        frames (before the first and after the last centre the gain holds)."""
        return self._gains(first, n, reuse=False)

    def _gains(self, first: int, n: int, reuse: bool) -> np.ndarray:
        """gains_planar; ``reuse`` writes into a scratch array kept for the next call (the
        caller uses the result at once), which saves an allocation per block."""
        hop = self.hop
        half = hop // 2
        if self._ramp is None or self._ramp.shape[0] != hop:
            ramp = (np.arange(half, dtype=np.float32) + half) / hop  # u >= half: the next hop's first half
            self._ramp = np.concatenate([ramp - 0.5, ramp])
        k0 = (first - half) // hop
        k1 = (first + n - 1 - half) // hop
        index = np.arange(k0, k1 + 2).clip(0, self.envelope.shape[0] - 1)
        points = self.envelope[index].T.astype(np.float32)  # (channels, segments + 1)
        steps = points[:, 1:] - points[:, :-1]
        shape = (self.channels, steps.shape[1], hop)
        ramps = self._scratch if reuse and self._scratch is not None and self._scratch.shape == shape else \
            np.empty(shape, np.float32)
        np.multiply(steps[:, :, None], self._ramp, out=ramps)
        ramps += points[:, :-1, None]  # p[k] + step * ramp, the same sum either way round
        if reuse:
            self._scratch = ramps
        offset = first - (k0 * hop + half)
        return ramps.reshape(self.channels, -1)[:, offset:offset + n]

    def predict_planar(self, ext: np.ndarray, first: int, n: int, integer: bool = False) -> np.ndarray:
        """``predict`` on planar blocks: ``ext`` is (channels, history + n + lookahead) and the
        result (channels, n). The same arithmetic as ``predict``, value for value."""
        if self.kind == "gain":
            mix = ext[:, self.history:self.history + n].astype(np.float64, copy=False) * self.gain[:, None]
            return np.rint(mix).astype(np.int64) if integer else mix
        taps = self.fir.shape[0]
        size = sfft.next_fast_len(ext.shape[1], real=True)
        spectrum = self._planar_spectra.get(size)
        if spectrum is None:
            spectrum = sfft.rfft(np.ascontiguousarray(self.fir.T, dtype=np.float32), size, axis=1)
            self._planar_spectra = {size: spectrum}
        spectra = sfft.rfft(ext.astype(np.float32, copy=False), size, axis=1)
        spectra *= spectrum
        filtered = sfft.irfft(spectra, size, axis=1)[:, taps - 1:taps - 1 + n]
        filtered *= self._gains(first, n, reuse=True)
        return filtered

    def predict(self, ext: np.ndarray, first: int, n: int, integer: bool = False) -> np.ndarray:
        """The model's master for frames [first, first + n) from the mix ``ext`` (see _filter)."""
        if self.kind == "gain":
            mix = ext[self.history:self.history + n].astype(np.float64) * self.gain
            return np.rint(mix).astype(np.int64) if integer else mix
        return self._filter(ext, n) * self.gains_at(first, n)


class ModelStream:
    """Feeds consecutive blocks of the stem mix to a model, keeping ``history`` frames."""

    def __init__(self, model: MasteringModel, channels: int, dtype: type = np.float64) -> None:
        self.model = model
        self.past = np.zeros((model.history, channels), dtype)

    def predict(self, mix: np.ndarray, ahead: np.ndarray, first: int, integer: bool = False) -> np.ndarray:
        """``mix`` is the block [first, first + n); ``ahead`` the next ``lookahead`` frames."""
        ext = np.concatenate([self.past, mix, ahead]) if self.model.history or len(ahead) else mix
        out = self.model.predict(ext, first, mix.shape[0], integer)
        history = self.model.history
        if history:
            self.past = mix[-history:].copy() if mix.shape[0] >= history else \
                np.concatenate([self.past, mix])[-history:]
        return out


class FirFitter:
    """Least-squares FIR per channel from cross spectra (Welch, Hann segments), fed block by
    block: ``add(mix, master)`` then ``fir()``."""

    def __init__(self, channels: int) -> None:
        self.cross = np.zeros((_WELCH // 2 + 1, channels), np.complex128)
        self.power = np.zeros((_WELCH // 2 + 1, channels))
        self.window = np.hanning(_WELCH)[:, None].astype(np.float32)

    def add(self, mix: np.ndarray, master: np.ndarray, threads: int = 1) -> None:
        count = mix.shape[0] // _WELCH  # Hann segments without overlap: half the FFTs, same fit
        if count <= 0:
            return
        x = sfft.rfft(mix[:count * _WELCH].reshape(count, _WELCH, -1) * self.window, axis=1, workers=threads)
        y = sfft.rfft(master[:count * _WELCH].reshape(count, _WELCH, -1) * self.window, axis=1, workers=threads)
        self.cross += np.sum(np.conj(x) * y, axis=0)
        self.power += np.sum(np.abs(x) ** 2, axis=0)

    def fir(self, taps: int = FIR_TAPS, lookahead: int = FIR_LOOKAHEAD) -> np.ndarray:
        floor = 1e-10 * max(float(self.power.max()), 1e-30)
        response = self.cross / np.maximum(self.power, floor)
        h = np.roll(np.fft.irfft(response, _WELCH, axis=0), lookahead, axis=0)[:taps]
        fade_in = np.hanning(2 * lookahead)[:lookahead] if lookahead else np.zeros(0)
        taper = np.concatenate([fade_in, np.ones(taps - lookahead - 256), np.hanning(512)[256:]])
        return h * taper[:, None]


def envelope_gains(filtered: np.ndarray, master: np.ndarray, hop: int, previous: np.ndarray) -> np.ndarray:
    """Least-squares gain per hop (rows) and channel; hops with no signal keep ``previous``."""
    count = filtered.shape[0] // hop
    z = filtered[:count * hop].reshape(count, hop, -1)
    y = master[:count * hop].reshape(count, hop, -1)
    power = np.einsum("hkc,hkc->hc", z, z, dtype=np.float64)
    gains = np.einsum("hkc,hkc->hc", z, y, dtype=np.float64) / np.maximum(power, 1e-30)
    quiet = power < 1e-9 * hop
    # Forward fill: a silent hop keeps the last gain measured (``previous`` before the block).
    gains = np.concatenate([np.asarray(previous, dtype=np.float64)[None, :], gains])
    rows = np.where(np.concatenate([np.zeros((1, gains.shape[1]), bool), quiet]), 0,
                    np.arange(count + 1)[:, None])
    filled = np.take_along_axis(gains, np.maximum.accumulate(rows, axis=0), axis=0)[1:]
    return np.clip(filled, 1e-3, 1e3)
