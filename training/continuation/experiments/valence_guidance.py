"""Experiment (issue 7): does guidance on the valence adapter make the continuation follow valence?

    python -m training.continuation.experiments.valence_guidance --guidance 1 4 8 16 --prompts 20

The shipped model barely reads its valence input (docs/continuation.md). Here every token is
drawn from ``ref + g * (target - ref)``: the logits with the target valence and those with the
prompt's own valence (two KV-cached decoders fed the same tokens; the prompt keeps its own
labels in both), the classifier-free-guidance construction. The same prompts, settings and mode
proxy as ``benchmarks.bench_controllability`` (``--prompt-labels``). An experiment, not a shipped
feature: the musical cost of large g is not measured here.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.stats import spearmanr

from engines.continuation.affect import mode_score
from engines.continuation.corpus import load_split_corpus
from engines.continuation.offline import prompt_tokens
from engines.continuation.runtime import ContinuationModel
from engines.continuation.sample import SamplingConfig, Stream, closing_tokens, sample_token
from engines.continuation.tokens import BAR, decode

LEVELS = (-0.8, -0.4, 0.0, 0.4, 0.8)


class GuidedStream(Stream):
    """A Stream whose logits are pushed away from a reference valence by ``guidance``."""

    def __init__(self, model, prompt, bars, config, va, prompt_va, reference, guidance, held=False) -> None:
        super().__init__(model, prompt, bars, config, 0, va, prompt_va=None if held else prompt_va)
        self.guidance, self.reference = guidance, np.asarray(reference, dtype=np.float32)
        self.ref = model.decoder(0)
        keep = self.ref.slots + 1
        self.ref_logits = self.ref.prefill(np.asarray(prompt, dtype=np.int64)[-keep:], prompt_va[-keep:])

    def __iter__(self):
        state = self.state
        for _ in range(self.max_tokens):
            logits = self.ref_logits + self.guidance * (self.logits - self.ref_logits)
            token = sample_token(logits, self.masker(state), self.config, self.rng)
            if token == BAR and state.bars + 1 > self.bars:
                break
            state.advance(token)
            yield token
            self.logits = self.decoder.step(token, self.va)
            self.ref_logits = self.ref.step(token, self.reference)
        for token in closing_tokens(state):
            state.advance(token)
            yield token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 4.0, 8.0, 16.0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--model", help="an exported continuation .onnx (default: the shipped one)")
    parser.add_argument("--held", action="store_true",
                        help="the target valence labels the prompt too (bench_controllability's default)")
    args = parser.parse_args()
    model = ContinuationModel.load(args.model) if args.model else ContinuationModel.load()
    data = load_split_corpus("test")
    prompts = []
    for piece in data.piece_indices("test"):
        begin, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        notes = [n for n in decode(data.tokens[begin:end])[0] if n.onset_steps < 96]
        if len(notes) >= 8:
            prompts.append(notes)
        if len(prompts) == args.prompts:
            break
    for guidance in args.guidance:
        targets, measured = [], []
        for level in LEVELS:
            for index, notes in enumerate(prompts):
                prompt, _, labels = prompt_tokens(notes, 48, 2, model.valence_lead)
                config = SamplingConfig(temperature=1.0, top_p=0.95, seed=index, bar_steps=48)
                stream = GuidedStream(model, prompt, 4, config, (level, 0.0), labels,
                                      (float(labels[-1, 0]), 0.0), guidance, args.held)
                generated = decode(list(stream))[0]
                if generated:
                    histogram = np.bincount([n.pitch % 12 for n in generated], minlength=12)
                    targets.append(level)
                    measured.append(float(mode_score(histogram)))
        means = {str(lv): round(float(np.mean([m for t, m in zip(targets, measured) if t == lv])), 3)
                 for lv in LEVELS}
        print(json.dumps({"guidance": guidance, "rho_pairs": round(float(spearmanr(targets, measured).statistic), 3),
                          "level_means": means}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
