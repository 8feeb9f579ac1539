"""The DSP the player and the renderer share: mixer, context, adaptive gains, output stage, layout.

``process(block, first_frame)`` turns one decoded block into the *feeds* of the layout, an
array (frames, feeds) that the pyo graph (``engines/snc_player/spatial.py``) plays or renders:

- stereo: the mix, one feed per file channel, through the context's output stage;
- multichannel: ``outputs`` feeds, each stem's channels on its routed ports;
- binaural: one mono feed per stem (placed by pyo's ``HRTF``) and the residual.

A stem's gain is the context's, plus the user's offset, plus the valence-arousal offset (all in
dB); mute is the context's or the user's; the user's pan wins when set. A context change lands
on the next bar line when a tempo is known, else at once; the output stages cross-fade over
``crossfade_s`` and the stem gains ramp.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.errors import ParameterError
from engines.snc.manifest import Manifest
from engines.snc.mastering import MasteringModel
from engines.snc_player.adaptive import DEFAULT_MAPPING, VAMapping
from engines.snc_player.contexts import Context
from engines.snc_player.effects import Chain
from engines.snc_player.mixer import SILENCE_DB, Mixer
from engines.va import VACurve

__all__ = ["Pipeline", "SOURCES", "UserStem"]

SOURCES = ("master", "stems")


@dataclass
class UserStem:
    gain_db: float = 0.0
    pan: float | None = None
    mute: bool = False
    solo: bool = False


class Pipeline:
    def __init__(
        self,
        manifest: Manifest,
        contexts: Mapping[str, Context],
        context: str = "default",
        mapping: VAMapping = DEFAULT_MAPPING,
        trajectory: VACurve | None = None,
        ramp_s: float = 0.02,
        crossfade_s: float = 0.05,
    ) -> None:
        self.manifest = manifest
        self.contexts = dict(contexts)
        self.stems = list(manifest.stems)
        self.names = [s.name for s in self.stems]
        self.rate = manifest.sample_rate
        self.context = self._get_from(contexts, context)
        self.layout = self.context.layout
        model = MasteringModel.from_manifest(
            manifest.mastering, manifest.channels, manifest.frames, "mastering"
        )
        self.mixer = Mixer(
            self.names, manifest.channels, model, self.rate, ramp_s, per_stem=self.layout != "stereo",
            crossfade_s=crossfade_s,
        )
        # Output frames lag input frames by this much (the mastering filter's look-ahead).
        self.delay_frames = self.mixer.delay_frames
        self.mapping = mapping
        self.trajectory = trajectory
        self.crossfade_frames = max(1, int(round(crossfade_s * self.rate)))
        self.user = {name: UserStem() for name in self.names}
        self.valence = 0.0
        self.arousal = 0.0
        self.tempo_bpm: float | None = None
        self.beats_per_bar = 4
        self._lock = threading.Lock()
        self._pending: tuple[str, int] | None = None
        self.chain = self._chain(self.context)
        self._old_chain: Chain | None = None
        self._fade_pos = 0
        self._apply_mix()

    # -- control ---------------------------------------------------------------------------------
    @staticmethod
    def _get_from(contexts: Mapping[str, Context], name: str) -> Context:
        if name not in contexts:
            raise ParameterError(f"no context {name!r}; available: {', '.join(sorted(contexts))}")
        return contexts[name]

    def _get(self, name: str) -> Context:
        return self._get_from(self.contexts, name)

    @property
    def feeds(self) -> int:
        if self.layout == "binaural":
            return len(self.names) + 2
        if self.layout == "multichannel":
            return self.context.outputs
        return self.manifest.channels

    def _chain(self, context: Context) -> Chain:
        channels = context.outputs if context.layout == "multichannel" else self.manifest.channels
        return Chain(context.level_db, context.eq, context.dynamics, channels, self.rate)

    def set_source(self, source: str) -> None:
        """``master``: the stored master (and remixes of it); ``stems``: the stem mix alone (the
        stems through the mastering model, without the residual), as DJ software plays stems.
        The switch cross-fades over ``crossfade_s``."""
        if source not in SOURCES:
            raise ParameterError(f"source {source!r} is not one of {', '.join(SOURCES)}")
        self.mixer.set_source(source == "stems")

    def set_user(self, name: str, **fields: float | bool | None) -> None:
        """The user's offset for one stem: gain_db (added), pan, mute, solo."""
        if name not in self.user:
            raise ParameterError(f"no stem {name!r}; stems: {', '.join(self.names)}")
        for key, value in fields.items():
            if not hasattr(self.user[name], key):
                raise ParameterError(f"stem setting {key!r} is not one of gain_db, pan, mute, solo")
            if key in ("mute", "solo"):
                if not isinstance(value, (bool, int, np.bool_)) or value not in (0, 1):
                    raise ParameterError(f"{name} {key} {value!r}: must be true or false")
            elif (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool)
                  or math.isnan(value) or (key == "pan" and not -1.0 <= value <= 1.0)
                  or (key == "gain_db" and value > 24.0)):
                raise ParameterError(f"{name} {key} {value!r}: must be a number "
                                     f"{'in -1..1' if key == 'pan' else 'up to 24 dB'}")
        for key, value in fields.items():
            setattr(self.user[name], key, value)
        self._apply_mix()

    def set_va(self, valence: float, arousal: float) -> None:
        self.valence, self.arousal = float(valence), float(arousal)
        self._apply_mix()

    def set_tempo(self, tempo_bpm: float | None, beats_per_bar: int = 4) -> None:
        self.tempo_bpm = tempo_bpm if tempo_bpm and tempo_bpm > 0 else None
        self.beats_per_bar = beats_per_bar

    def set_context(self, name: str, now_frame: int) -> int:
        """Switch context; returns the frame where it lands (the next bar line when a tempo is known)."""
        context = self._get(name)
        if context.layout != self.layout or (
            context.layout == "multichannel" and context.outputs != self.context.outputs
        ):
            raise ParameterError(
                f"context {name!r} needs the {context.layout} layout; this player runs "
                f"{self.layout}: restart it with that context"
            )
        at = now_frame
        if self.tempo_bpm:
            bar = self.beats_per_bar * 60.0 / self.tempo_bpm * self.rate
            at = int(math.ceil(now_frame / bar - 1e-9) * bar)
        with self._lock:
            self._pending = (name, at)
        return at

    def _apply_mix(self) -> None:
        base = self.context.mix_for(self.stems)
        va = self.mapping.gains_db(self.valence, self.arousal, self.stems)
        changes = {}
        for name in self.names:
            user = self.user[name]
            gain = base[name]["gain_db"] + user.gain_db + va[name]
            changes[name] = {
                "gain_db": max(SILENCE_DB, min(24.0, gain)),
                "pan": base[name]["pan"] if user.pan is None else float(user.pan),
                "mute": bool(base[name]["mute"] or user.mute),
                "solo": bool(user.solo),
            }
        self.mixer.set_many(changes)

    def _switch(self, name: str) -> None:
        self.context = self._get(name)
        self._old_chain, self.chain = self.chain, self._chain(self.context)
        self._fade_pos = 0
        self._apply_mix()

    # -- audio -----------------------------------------------------------------------------------
    def process(self, block: Mapping[str, np.ndarray], first_frame: int) -> np.ndarray:
        """The layout's feeds for this block, (frames, feeds) float32, ``delay_frames`` late."""
        frames = np.asarray(block["master"]).shape[0]
        with self._lock:
            pending = self._pending
        if pending is not None and first_frame < pending[1] < first_frame + frames:
            cut = pending[1] - first_frame
            head = self.process({k: v[:cut] for k, v in block.items()}, first_frame)
            tail = self.process({k: v[cut:] for k, v in block.items()}, pending[1])
            return np.concatenate([head, tail])
        if pending is not None and pending[1] <= first_frame:
            with self._lock:
                self._pending = None
            self._switch(pending[0])
        if self.trajectory is not None:
            valence, arousal = self.trajectory.at(first_frame / self.rate)
            if (valence, arousal) != (self.valence, self.arousal):
                self.set_va(valence, arousal)
        if self.layout == "stereo":
            return self._stage(self.mixer.process(block, first_frame))
        scaled, residual = self.mixer.parts(block, first_frame)
        if self.layout == "binaural":
            mono = scaled.mean(axis=2).T
            res = residual if residual.shape[1] == 2 else np.repeat(residual[:, :1], 2, axis=1)
            return np.concatenate([mono, res], axis=1).astype(np.float32)
        return self._stage(self._route(scaled, residual))

    def _stage(self, mixed: np.ndarray) -> np.ndarray:
        out = self.chain.process(mixed)
        if self._old_chain is None:
            return out.astype(np.float32, copy=False)
        old = self._old_chain.process(mixed)
        n = out.shape[0]
        fade = np.minimum((self._fade_pos + np.arange(1, n + 1)) / self.crossfade_frames, 1.0)[:, None]
        self._fade_pos += n
        if self._fade_pos >= self.crossfade_frames:
            self._old_chain = None
        return (old * (1.0 - fade) + out * fade).astype(np.float32)

    def routes(self) -> dict[str, tuple[int, ...]]:
        """1-based output ports of every stem and of the residual (multichannel layout)."""
        ctx = self.context
        channels = self.manifest.channels
        found: dict[str, tuple[int, ...]] = {}
        for index, stem in enumerate(self.stems):
            explicit = ctx.routes.get(stem.name) or ctx.routes.get(f"@{stem.role}")
            if explicit:
                found[stem.name] = tuple(explicit)
            else:
                first = 1 + index * channels
                ports = tuple(range(first, first + channels))
                found[stem.name] = (
                    ports if ports[-1] <= ctx.outputs else tuple(range(1, min(channels, ctx.outputs) + 1))
                )
        found["residual"] = tuple(ctx.routes.get("residual") or range(1, min(channels, ctx.outputs) + 1))
        return found

    def _route(self, scaled: np.ndarray, residual: np.ndarray) -> np.ndarray:
        out = np.zeros((residual.shape[0], self.context.outputs), dtype=np.float64)
        routes = self.routes()
        for name, signal in [*zip(self.names, scaled), ("residual", residual)]:
            ports = routes[name]
            if len(ports) == signal.shape[1]:
                for channel, port in enumerate(ports):
                    out[:, port - 1] += signal[:, channel]
            else:
                mono = signal.mean(axis=1)
                for port in ports:
                    out[:, port - 1] += mono
        return out
