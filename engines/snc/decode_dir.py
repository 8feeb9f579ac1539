"""Decoding an SNC file into a folder of WAV files (``snc decode``): every track written at
once through a swept scratch folder and published together, lossless PCM checked against the
hashes stored at encoding, and damaged spans silenced under ``--salvage``."""

from __future__ import annotations

import contextlib
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import CodecError
from engines.snc.integrity import Damage, merge_spans
from engines.snc.scratch import publish_all, scratch_folder

if TYPE_CHECKING:
    from engines.snc.reader import SncReader

__all__ = ["decode_to_dir"]


def decode_to_dir(reader: SncReader, out_dir: Path, salvage: bool = False) -> tuple[list[Path], list[Damage]]:
    """DIR/master.wav and DIR/<stem>.wav, each written to a temporary name and renamed;
    returns them and the damage found. The file is scanned first: a damaged file raises
    CodecError before anything is written, unless ``salvage``: then the damaged spans are
    silent (in their track and in the master, widened by the mastering filter's reach),
    the output ends where the data ends, and the returned list says what is missing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CodecError(f"output {out_dir} is a file; name a folder")
    names = ["master", *reader.names[1:]]
    reader.refuse_self_overwrite([out_dir / f"{n}.wav" for n in names])
    damage = list(reader.scan().damage)
    if damage and not salvage:
        reader.check_intact()
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _decode_into(reader, out_dir, names, damage, salvage)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # (a folder this call made, left empty by the failure)
        raise

def _decode_into(reader: SncReader, out_dir: Path, names: list[str], damage: list[Damage],
                 salvage: bool) -> tuple[list[Path], list[Damage]]:
    import soundfile as sf

    subtype = {"s16": "PCM_16", "s24": "PCM_24"}.get(reader.manifest.sample_format, "FLOAT")
    targets = [out_dir / f"{n}.wav" for n in names]
    digests = {n: hashlib.sha256() for n in names}
    rate = reader.manifest.sample_rate
    reach = (reader.model.lookahead, reader.model.history)
    # written in a scratch folder a SIGKILLed decode cannot leave for good (scratch.py); the
    # handles close (inner block) before the outputs are synced and renamed together
    with scratch_folder(out_dir, "decode") as scratch, publish_all(scratch, targets) as temporaries, \
            contextlib.ExitStack() as stack:
        handles = {n: stack.enter_context(sf.SoundFile(str(p), "w", rate, reader.manifest.channels, subtype,
                                                       format="WAV")) for n, p in zip(names, temporaries)}
        shift = 16 if reader.manifest.sample_format == "s16" else 8

        def write(name: str, data: np.ndarray) -> None:
            if reader.integer:
                digests[name].update(np.ascontiguousarray(data, dtype=np.int32))
                clipped = np.clip(data, -(2 ** 31 >> shift), (2 ** 31 >> shift) - 1)
                handles[name].write((clipped << shift).astype(np.int32))
            else:
                handles[name].write(data)

        # Each file is written on a thread of its own while the next block decodes (libsndfile,
        # hashlib and numpy release the GIL); a file's blocks are written one after the other.
        # (The pool is entered last: it finishes every write before the handles close.)
        threads = min(reader.threads, len(names))
        pool = stack.enter_context(ThreadPoolExecutor(threads, thread_name_prefix="snc-write")) \
            if threads > 1 else None
        pending: list = []
        position = 0
        found = list(damage) if salvage else None
        for block in reader.blocks(integer=reader.integer, salvage=found):
            count = next(iter(block.values())).shape[0]
            if found:
                block = {name: _silence(data, position, rate, found, name, reader.names, reach)
                         for name, data in block.items()}
            for future in pending:
                future.result()
            if pool is None:
                for name, data in block.items():
                    write(name, data)
            else:
                pending = [pool.submit(write, name, data) for name, data in block.items()]
            position += count
        for future in pending:
            future.result()
        if found is not None:
            damage = merge_spans(found)
        if position < reader.manifest.frames and salvage:
            damage.append(Damage(-1, "all", round(position / rate, 3), round(reader.manifest.duration_s, 3),
                                 "no data: the outputs end here"))
        if reader.integer and not damage:
            expected = reader.expected_hashes()
            bad = [n for n in names if expected.get(n) and digests[n].hexdigest() != expected[n]]
            if bad and not salvage:
                raise CodecError(f"{reader.path}: lossless tracks {bad} decode to PCM that does not match the "
                                 "hashes stored at encoding: the file is corrupt")
            for name in bad:
                damage.append(Damage(names.index(name), name, 0.0, round(reader.manifest.duration_s, 3),
                                     "PCM hash mismatch somewhere in the track"))
    return targets, damage


def _silence(data: np.ndarray, position: int, rate: int, damage: list[Damage], name: str, tracks: list[str],
             reach: tuple[int, int]) -> np.ndarray:
    """``data`` (frames from ``position``) with the damaged spans zeroed: a track's own spans;
    in the master every track's spans, widened by the mastering filter's look-ahead before and
    history after (the frames the damaged data reaches through the filter)."""
    end = position + data.shape[0]
    out = data
    for item in damage:
        if item.track >= len(tracks):
            continue  # the mix track: not part of decoding
        if name != "master" and (item.track < 0 or tracks[item.track] != name) and item.track != -1:
            continue
        lo, hi = int(item.start_s * rate), int(math.ceil(item.end_s * rate))
        if name == "master":
            lo, hi = lo - reach[0], hi + reach[1]
        if hi <= position or lo >= end or hi <= lo:
            continue
        if out is data:
            out = data.copy()
        out[max(lo, position) - position:min(hi, end) - position] = 0
    return out
