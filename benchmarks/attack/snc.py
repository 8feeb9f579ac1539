"""Attack area ``snc``: hostile and damaged .snc files and command lines against the real
``scorebridge snc`` commands (decompression bombs, cut and corrupt files, outputs that are
inputs, bad manifests, non-finite options, signals mid-write, closed pipes).

    python -m benchmarks.attack --only snc [--quick]

Files are crafted from small songs encoded by this checkout; manifests are edited and
re-muxed with a matching checksum tag, so a reader that trusts the manifest is tested, not
one that merely notices an edit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.attack.common import ROOT, AreaResult, CommandOutcome, check_refused, leftovers, scorebridge

RATE = 48000
# A bomb must be refused within this many seconds and leave at most this many bytes behind
# (the real song is 3 s: about 2 MB of WAV per output).
BOMB_SECONDS = 60.0
BOMB_MAX_OUTPUT_BYTES = 16 << 20


def _song(folder: Path, seconds: float) -> dict[str, Path]:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(3)
    stems = {"vocals": np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2, 1),
             "drums": np.stack([0.2 * rng.standard_normal(n) * (np.sin(2 * np.pi * 3 * t) > 0.5)] * 2, 1)}
    master = np.tanh(1.3 * sum(stems.values())) * 0.7
    paths = {}
    for name, data in {**stems, "master": master}.items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], data, RATE, subtype="PCM_16")
    return paths


def _encode(song: dict[str, Path], out: Path, mode: str) -> Path:
    from engines.snc import encode

    encode(song["master"], {k: v for k, v in song.items() if k != "master"}, out, mode)
    return out


def _remux(source: Path, out: Path, change=None, packets=None) -> Path:
    """``source`` with its manifest edited by ``change(dict)`` (and a matching checksum tag)
    and its packets filtered by ``packets(list) -> list``."""
    import av

    with av.open(str(source)) as src:
        data = json.loads(src.metadata["SNC_MANIFEST"])
        if change:
            change(data)
        text = json.dumps(data)
        with av.open(str(out), "w", format="matroska") as dst:
            dst.metadata["SNC_MANIFEST"] = text
            dst.metadata["SNC_MANIFEST_CRC32"] = f"{zlib.crc32(text.encode('utf-8')):08x}"
            dst.metadata["SNC_VERSION"] = str(data.get("version"))
            streams = []
            for stream in src.streams.audio:
                copy = dst.add_stream_from_template(stream)
                copy.metadata["title"] = stream.metadata["title"]
                streams.append(copy)
            found = [p for p in src.demux(*src.streams.audio) if p.dts is not None]
            for packet in (packets(found) if packets else found):
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return out


def _payload_offsets(path: Path) -> list[tuple[int, int]]:
    import av

    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(*container.streams.audio) if p.size and p.pos and p.pos > 0]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _refused_without_output(result: AreaResult, probe: str, outcome: CommandOutcome, folder: Path,
                            allowed: set[Path] = frozenset()) -> None:
    check_refused(result, probe, outcome)
    left = [p for p in (folder.rglob("*") if folder.exists() else []) if p.is_file() and p not in allowed]
    if left:
        result.add("partial-file", probe, f"left {len(left)} files ({_size(folder)} bytes): "
                   f"{', '.join(p.name for p in left[:4])}")


def _sigterm(result: AreaResult, probe: str, args: list[str], folder: Path) -> None:
    """SIGTERM ``scorebridge ARGS`` as soon as its temporary files appear; nothing may stay."""
    result.probes += 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-m", "bridge", *args], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        sent = False
        while process.poll() is None and time.monotonic() < deadline:
            if leftovers(folder):
                process.send_signal(signal.SIGTERM)
                sent = True
                break
            time.sleep(0.002)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            result.add("hang", probe, "still running 30 s after SIGTERM")
            return
        if not sent:
            for path in folder.iterdir():
                path.unlink() if path.is_file() else None
            continue
        if "Traceback" in err:
            result.add("crash", probe, err.strip().splitlines()[-1][:200])
        left = leftovers(folder)
        if left:
            result.add("partial-file", probe, f"after SIGTERM: {', '.join(p.name for p in left[:4])} "
                       f"({_size(folder)} bytes)")
        return
    # (it always finished before its temporary files were seen: nothing to clean, not a finding)


def run(workdir: Path, quick: bool) -> AreaResult:
    result = AreaResult("snc")
    song = _song(workdir, 3.0)
    lossless = _encode(song, workdir / "lossless.snc", "lossless")
    lossy = _encode(song, workdir / "lossy.snc", "transparent")

    # -- decompression bombs (item 8): a manifest claiming 4 hours ------------------------------
    def four_hours(data: dict) -> None:
        data["frames"] = 4 * 3600 * data["sample_rate"]

    bomb = _remux(lossless, workdir / "bomb.snc", four_hours)
    for action in ("decode", "render"):
        out = workdir / f"bomb-{action}"
        out.mkdir()
        target = out if action == "decode" else out / "mix.wav"
        started = time.monotonic()
        outcome = scorebridge("snc", action, str(bomb), "-o", str(target), timeout_s=BOMB_SECONDS)
        probe = f"snc {action} of a 3 s file claiming 4 hours"
        check_refused(result, probe, outcome)
        if _size(out) > BOMB_MAX_OUTPUT_BYTES:
            result.add("leak", probe, f"wrote {_size(out)} bytes in {time.monotonic() - started:.1f} s")
        elif leftovers(out, set()):
            result.add("partial-file", probe, f"left {', '.join(p.name for p in leftovers(out, set())[:4])}")

    # One packet moved 4 hours ahead: the gap must not be allocated or written.
    def jump(found: list) -> list:
        last = [p for p in found if p.stream.index == 1][-1]
        last.pts = last.dts = 4 * 3600 * 1000 - 100
        return [p for p in found if p is not last] + [last]

    jumped = _remux(lossless, workdir / "jump.snc", packets=jump)
    out = workdir / "jump-out"
    _refused_without_output(result, "snc decode of a track jumping 4 hours ahead",
                            scorebridge("snc", "decode", str(jumped), "-o", str(out), timeout_s=BOMB_SECONDS), out)

    # -- cut and corrupt files (item 9) -----------------------------------------------------------
    for source in ((lossy,) if quick else (lossless, lossy)):
        data = source.read_bytes()
        for fraction in ((0.5,) if quick else (0.5, 0.63, 0.9)):
            cut = workdir / f"cut-{source.stem}-{fraction}.snc"
            cut.write_bytes(data[: int(len(data) * fraction)])
            out = workdir / f"cut-{source.stem}-{fraction}-out"
            _refused_without_output(result, f"snc decode of {source.stem} cut to {fraction:.0%}",
                                    scorebridge("snc", "decode", str(cut), "-o", str(out)), out)
    rng = np.random.default_rng(12)
    data = lossy.read_bytes()
    spans = _payload_offsets(lossy)
    for index in range(2 if quick else 12):
        damaged = bytearray(data)
        pos, size = spans[int(rng.integers(len(spans)))]
        damaged[pos + int(rng.integers(size // 2, size))] ^= 0x24
        path = workdir / f"corrupt-{index}.snc"
        path.write_bytes(bytes(damaged))
        out = workdir / f"corrupt-{index}-out"
        _refused_without_output(result, f"snc decode of a lossy file with a damaged packet #{index}",
                                scorebridge("snc", "decode", str(path), "-o", str(out)), out)
        if index == 0:
            verify = scorebridge("snc", "verify", str(path))
            result.probes += 1
            if verify.returncode != 1 or "track" not in verify.stdout:
                result.add("crash", "snc verify of a damaged file",
                           f"exit {verify.returncode}: {(verify.stdout + verify.stderr).strip()[:200]}")
            salvage = scorebridge("snc", "decode", str(path), "-o", str(workdir / "salvaged"), "--salvage")
            result.probes += 1
            if salvage.returncode != 0 or "missing" not in salvage.stderr or salvage.traceback:
                result.add("crash", "snc decode --salvage of a damaged file",
                           f"exit {salvage.returncode}: {salvage.stderr.strip()[-200:]}")

    # -- outputs that are inputs (item 10) ----------------------------------------------------------
    before = song["master"].read_bytes()
    for output in (song["master"], song["vocals"]):
        outcome = scorebridge("snc", "encode", "--master", str(song["master"]), "--stem",
                              f"vocals={song['vocals']}", "-o", str(output))
        check_refused(result, f"snc encode -o {output.name} (an input)", outcome)
    if song["master"].read_bytes() != before:
        result.add("security", "snc encode -o an input", "the master was overwritten")
        song = _song(workdir, 3.0)
    disguised = workdir / "snc-as-wav" / "master.wav"
    disguised.parent.mkdir()
    disguised.write_bytes(lossless.read_bytes())
    check_refused(result, "snc decode into the folder of its own input named master.wav",
                  scorebridge("snc", "decode", str(disguised), "-o", str(disguised.parent)))
    check_refused(result, "snc render -o its own input",
                  scorebridge("snc", "render", str(disguised), "-o", str(disguised)))
    if disguised.read_bytes() != lossless.read_bytes():
        result.add("security", "snc decode/render onto the input", "the input file was overwritten")

    # -- clean errors (item 12) ------------------------------------------------------------------------
    edits = {
        "pan 'abc'": lambda d: d["stems"][0].update(pan="abc"),
        "pan null": lambda d: d["stems"][0].update(pan=None),
        "gain_block_frames 'x'": lambda d: d["residual"].update(gain_block_frames="x"),
        "stem name 'vocals\\n'": lambda d: d["stems"][0].update(name="vocals\n"),
        "stem name '../x'": lambda d: d["stems"][0].update(name="../x"),
    }
    for label, change in list(edits.items())[: 3 if quick else None]:
        bad = _remux(lossless, workdir / "bad.snc", change)
        for action in (("info",) if quick else ("info", "decode")):
            out = workdir / "bad-out"
            args = ["snc", action, str(bad)] + (["-o", str(out)] if action == "decode" else [])
            _refused_without_output(result, f"snc {action} of a manifest with {label}", scorebridge(*args), out)

    def nan_gain(data: dict) -> None:
        data["residual"]["gains"][0][0] = float("nan")

    bad = _remux(lossy, workdir / "nan.snc", nan_gain)
    check_refused(result, "snc info of NaN residual gains", scorebridge("snc", "info", str(bad)))
    out = workdir / "enc-out"
    out.mkdir()
    for label, target in (("into a missing folder", out / "missing" / "x.snc"), ("onto a folder", out)):
        check_refused(result, f"snc encode -o {label}",
                      scorebridge("snc", "encode", "--master", str(song["master"]), "--stem",
                                  f"vocals={song['vocals']}", "-o", str(target)))
    check_refused(result, "snc encode with a stem named 'vocals\\n'",
                  scorebridge("snc", "encode", "--master", str(song["master"]), "--stem",
                              f"vocals\n={song['vocals']}", "-o", str(out / "x.snc")))
    for option in (("--gain", "vocals=nan"),) + ((("--pan", "vocals=inf"),) if not quick else ()):
        check_refused(result, f"snc render {' '.join(option)}",
                      scorebridge("snc", "render", str(lossless), "-o", str(out / "mix.wav"), *option))
    if list(out.iterdir()):
        result.add("partial-file", "refused snc commands", f"left {[p.name for p in out.iterdir()]}")

    # -- signals (item 13) and closed pipes ------------------------------------------------------------
    (workdir / "long").mkdir()
    long_song = _song(workdir / "long", 12.0 if quick else 20.0)
    long_file = _encode(long_song, workdir / "long.snc", "lossless")
    for action in (("decode",) if quick else ("decode", "render", "encode")):
        folder = workdir / f"term-{action}"
        folder.mkdir()
        if action == "decode":
            args = ["snc", "decode", str(long_file), "-o", str(folder)]
        elif action == "render":
            args = ["snc", "render", str(long_file), "-o", str(folder / "mix.wav")]
        else:
            args = ["snc", "encode", "--master", str(long_song["master"]), "--stem", f"vocals={long_song['vocals']}",
                    "--mode", "lossless", "-o", str(folder / "x.snc")]
        _sigterm(result, f"SIGTERM during snc {action}", args, folder)
    result.probes += 1
    piped = subprocess.run(["bash", "-c", f"{sys.executable} -m bridge snc info {lossy} --json | head -c 10"],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           timeout=60)
    if "Traceback" in piped.stderr:
        result.add("crash", "snc info --json | head -c 10", piped.stderr.strip().splitlines()[-1][:200])
    return result
