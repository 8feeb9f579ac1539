"""Attack area ``offline``: hostile MIDI files and VA curves against the real offline commands
(``harmonize``, ``continue``, ``va import``, ``va apply``), run as subprocesses.

Every probe checks that a hostile input is refused cleanly (exit 1, one ``scorebridge ...:
error: FILE: reason`` line, no traceback), within a time and memory bound (a child over
``MEMORY_LIMIT_BYTES`` is killed and counted as a leak), with no output or temporary file left;
that a folder run goes on past its bad files; that the lead sheet grows linearly with the notes;
and that SIGTERM in the middle of a write leaves no temporary file.

    python -m benchmarks.attack --only offline [--quick]
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.attack.common import ROOT, AreaResult, CommandOutcome, check_refused, leftovers, rss_mb

# A command that grows past this is killed: the va import reached 15 GB.
MEMORY_LIMIT_BYTES = 2 * 1024 ** 3
# Seconds a refused input may take (model loading included).
REFUSE_TIMEOUT_S = 60.0
# The lead sheet's time for 4x the notes may be at most this many times the smaller run's
# (linear: about 4, plus the constant of loading the model; quadratic: about 16).
LINEAR_RATIO = 8.0


# -- running a command under a memory watch ------------------------------------------------
def run_watched(args: list[str], timeout_s: float, cwd: Path | None = None) -> tuple[CommandOutcome, int, float]:
    """``python -m bridge ARGS``: (outcome, peak RSS in bytes, seconds). Killed past the timeout
    (returncode None) or past MEMORY_LIMIT_BYTES (returncode None, peak above the limit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "bridge", *args], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    killed = False
    try:
        while process.poll() is None:
            peak = max(peak, int(rss_mb(process.pid) * 2**20))
            if peak > MEMORY_LIMIT_BYTES or time.monotonic() - started > timeout_s:
                process.kill()
                killed = True
                break
            time.sleep(0.05)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    return CommandOutcome(None if killed else process.returncode, out, err), peak, seconds


def _refused(result: AreaResult, probe: str, args: list[str], inputs: set[Path], folder: Path,
             reason: str | None = None) -> None:
    """The command must refuse: clean message naming the input, within bounds, nothing left."""
    before = {p for p in folder.rglob("*")} | inputs
    outcome, peak, _ = run_watched(args, REFUSE_TIMEOUT_S)
    if peak > MEMORY_LIMIT_BYTES:
        result.probes += 1
        result.add("leak", probe, f"grew past {MEMORY_LIMIT_BYTES >> 30} GiB")
        return
    check_refused(result, probe, outcome)
    if outcome.returncode == 1 and not outcome.traceback:
        line = outcome.stderr.strip().splitlines()[-1] if outcome.stderr.strip() else ""
        if not re.match(r"scorebridge [\w ]+: error: ", line):
            result.add("crash", probe, f"not a one-line error: {line[:160]!r}")
        elif reason is not None and reason not in line:
            result.add("crash", probe, f"the error does not say {reason!r}: {line[:160]!r}")
    left = [p for p in leftovers(folder, before) if p not in inputs]
    if left:
        result.add("partial-file", probe, ", ".join(p.name for p in left[:5]))
        for path in left:
            if path.is_file():
                path.unlink()


# -- hostile inputs -----------------------------------------------------------------------
def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _midi(events: list[bytes], division: int = 480, tracks: int | None = None) -> bytes:
    body = b"".join(events) + b"\x00\xff\x2f\x00"
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1 if tracks is None else tracks, division)
            + b"MTrk" + struct.pack(">I", len(body)) + body)


def _melody_events(count: int, meta: tuple[bytes, ...] = ()) -> list[bytes]:
    events = list(meta)
    for index in range(count):
        pitch = (60, 62, 64, 65, 67, 69, 71, 72, 74, 76)[index * 7 % 10]
        length = (120, 240, 360, 480, 160)[index % 5]
        events += [b"\x00\x90" + bytes([pitch, 80]), _vlq(length) + b"\x80" + bytes([pitch, 0])]
    return events


TEMPO = b"\x00\xff\x51\x03\x07\xa1\x20"
METER = b"\x00\xff\x58\x04\x04\x02\x18\x08"


def hostile_midi(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _melody_events(8, (TEMPO, METER))
    files = {
        "division-0": (_midi(good, division=0), "time division"),
        "smpte-division": (_midi(good, division=0xE728), "SMPTE"),
        "meter-0-1": (_midi(_melody_events(8, (TEMPO, b"\x00\xff\x58\x04\x00\x00\x18\x08"))), "time signature 0/1"),
        "meter-4-2^200": (_midi(_melody_events(8, (TEMPO, b"\x00\xff\x58\x04\x04\xc8\x18\x08"))), "time signature"),
        "tempo-0": (_midi(_melody_events(8, (b"\x00\xff\x51\x03\x00\x00\x00", METER))), "tempo 0"),
        # the 56-byte file: one note after a 2^28-tick gap
        "gap-2^28": (_midi([_vlq(2**28 - 1) + b"\x90\x3c\x50", b"\x83\x60\x80\x3c\x00"]), "tick"),
        "65535-tracks": (_midi(good, tracks=0xFFFF), "tracks"),
        "bad-key-signature": (_midi(_melody_events(8, (b"\x00\xff\x59\x02\x40\x05",))), "not a readable MIDI file"),
        "cut-in-half": (_midi(good)[:40], "not a readable MIDI file"),
        "garbage": (os.urandom(256), "not a readable MIDI file"),
        "oversized": (_midi(good) + b"\x00" * (5 * 1024 * 1024), "MiB"),
    }
    paths = {}
    for name, (data, reason) in files.items():
        path = folder / f"{name}.mid"
        path.write_bytes(data)
        paths[name] = (path, reason)
    fifo = folder / "fifo.mid"
    os.mkfifo(fifo)
    paths["fifo"] = (fifo, "not a regular file")
    return paths


def hostile_curves(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    header = "time_s,valence,arousal\n"
    texts = {
        "gap-1e8.csv": (header + "0,0,0\n100000000,0.5,0.5\n", "line 3"),
        "nan.csv": (header + "0,0,0\n1,nan,0\n", "line 3"),
        "inf.csv": (header + "0,0,0\n1,0,inf\n", "line 3"),
        "unsorted.csv": (header + "5,0,0\n1,0,0\n", "line 3"),
        "huge-value.csv": (header + "0,1e308,0\n", "line 2"),
        "huge-field.csv": (header + '0,"' + "9" * 300_000 + '",0\n', "line 2"),
        "deep.json": ("[" * 200_000 + "]" * 200_000, "nested"),
        "nan.json": ('{"time_s": [0, 1], "valence": [0, NaN], "arousal": [0, 0]}', "sample 1"),
        "huge-int.json": ('[{"time_s": 0, "valence": 0, "arousal": ' + "9" * 6000 + "}]", "invalid JSON"),
        "beats-1e300.csv": ("beats,valence,arousal\n0,0,0\n1e300,0,0\n", "line 3"),
    }
    paths = {}
    for name, (text, reason) in texts.items():
        paths[name] = (folder / name, reason)
        paths[name][0].write_text(text)
    utf16 = folder / "utf16.csv"
    utf16.write_bytes((header + "0,0,0\n").encode("utf-16"))
    paths["utf16.csv"] = (utf16, "cannot read")
    fifo = folder / "fifo.csv"
    os.mkfifo(fifo)
    paths["fifo.csv"] = (fifo, "not a regular file")
    paths["dev-zero"] = (Path("/dev/zero"), "not a regular file")
    return paths


# -- probes ---------------------------------------------------------------------------------
def _midi_probes(result: AreaResult, workdir: Path, quick: bool) -> None:
    inputs = hostile_midi(workdir / "midi")
    curve = workdir / "good.csv"
    curve.write_text("time_s,valence,arousal\n0,0,0\n10,0.5,0.5\n")
    out = workdir / "out"
    out.mkdir()
    everything = {p for p, _ in inputs.values()} | {curve}
    names = sorted(inputs)
    harmonize_alone = ("tempo-0", "gap-2^28", "meter-0-1", "smpte-division") if quick else names
    for name in harmonize_alone:
        path, reason = inputs[name]
        _refused(result, f"harmonize --musicxml {name}", ["harmonize", str(path), "-o", str(out / "h.mid"),
                 "--musicxml", str(out / "h.musicxml")], everything, workdir, reason)
    continue_on = ("division-0", "meter-0-1", "gap-2^28", "fifo") if quick else names
    for name in continue_on:
        path, reason = inputs[name]
        _refused(result, f"continue {name}", ["continue", str(path), "-o", str(out / "c.mid")],
                 everything, workdir, reason)
    for name in names:
        path, reason = inputs[name]
        _refused(result, f"va apply {name}", ["va", "apply", str(path), str(curve), "-o", str(out / "a.mid")],
                 everything, workdir, reason)


def _folder_probe(result: AreaResult, workdir: Path) -> None:
    """A folder with one good file among bad ones: the good one is written, each bad one is
    named at the end, exit 1."""
    folder = workdir / "batch"
    inputs = hostile_midi(folder)
    (folder / "fifo.mid").unlink()  # a folder run lists regular files only
    del inputs["fifo"]
    (folder / "zz-good.mid").write_bytes(_midi(_melody_events(12, (TEMPO, METER))))
    out, xml = workdir / "batch-out", workdir / "batch-xml"
    outcome, peak, _ = run_watched(["harmonize", str(folder), "-o", str(out), "--musicxml", str(xml)],
                                   REFUSE_TIMEOUT_S * 3)
    probe = "harmonize folder with bad files"
    result.probes += 1
    if peak > MEMORY_LIMIT_BYTES:
        result.add("leak", probe, f"grew past {MEMORY_LIMIT_BYTES >> 30} GiB")
    elif outcome.returncode is None:
        result.add("hang", probe, "still running at the timeout")
    elif outcome.traceback or outcome.returncode != 1:
        result.add("crash", probe, f"exit {outcome.returncode}: {outcome.stderr.strip()[-200:]}")
    else:
        missing = [name for name, (path, _) in inputs.items() if str(path) not in outcome.stderr]
        if missing:
            result.add("crash", probe, f"bad files not reported: {', '.join(missing)}")
        if not (out / "zz-good.mid").is_file() or not (xml / "zz-good.musicxml").is_file():
            result.add("crash", probe, "the good file after the bad ones was not harmonized")
    left = [p for d in (out, xml) if d.exists() for p in d.iterdir() if p.name.startswith(".")]
    if left:
        result.add("partial-file", probe, ", ".join(p.name for p in left))


def _curve_probes(result: AreaResult, workdir: Path, quick: bool) -> None:
    curves = hostile_curves(workdir / "curves")
    melody = workdir / "tune.mid"
    melody.write_bytes(_midi(_melody_events(12, (TEMPO, METER))))
    out = workdir / "curve-out"
    out.mkdir()
    everything = {p for p, _ in curves.values()} | {melody}
    for name, (path, reason) in sorted(curves.items()):
        # va import and va apply read video time (time_s); a curve in beats is for harmonize/continue
        video_reason = "missing column" if name.startswith("beats") else reason
        _refused(result, f"va import --rate 10 {name}", ["va", "import", str(path), "-o", str(out / "v.csv"),
                 "--rate", "10"], everything, workdir, video_reason)
        if quick and name not in ("gap-1e8.csv", "deep.json", "fifo.csv", "beats-1e300.csv"):
            continue
        _refused(result, f"harmonize --va {name}", ["harmonize", str(melody), "-o", str(out / "h.mid"),
                 "--va", str(path)], everything, workdir, reason)
        _refused(result, f"continue --va {name}", ["continue", str(melody), "-o", str(out / "c.mid"),
                 "--va", str(path)], everything, workdir, reason)
        _refused(result, f"va apply {name}", ["va", "apply", str(melody), str(path), "-o", str(out / "a.mid")],
                 everything, workdir, video_reason)
    long_curve = workdir / "day.csv"
    long_curve.write_text("time_s,valence,arousal\n0,0,0\n86000,0.5,0.5\n")
    _refused(result, "va import --rate 1000 over 86,000 s", ["va", "import", str(long_curve), "-o",
             str(out / "v.csv"), "--rate", "1000"], everything | {long_curve}, workdir, "samples")
    _refused(result, "va apply --lane-step 1e-9", ["va", "apply", str(melody), str(long_curve), "-o",
             str(out / "a.mid"), "--lane-step", "1e-9"], everything | {long_curve}, workdir, "lane")


def _timed_harmonize(workdir: Path, notes: int) -> tuple[CommandOutcome, float]:
    source = workdir / f"n{notes}.mid"
    source.write_bytes(_midi(_melody_events(notes, (TEMPO, METER))))
    outcome, _, seconds = run_watched(["harmonize", str(source), "-o", str(workdir / f"n{notes}-out.mid"),
                                       "--musicxml", str(workdir / f"n{notes}.musicxml")], 600.0)
    return outcome, seconds


def _scaling_probe(result: AreaResult, workdir: Path, quick: bool) -> None:
    """``--musicxml`` for n and 4n notes: the larger must not take more than LINEAR_RATIO times."""
    small, large = (250, 1000) if quick else (2000, 8000)
    probe = f"harmonize --musicxml {small} vs {large} notes"
    result.probes += 1
    first, small_s = _timed_harmonize(workdir, small)
    second, large_s = _timed_harmonize(workdir, large)
    for outcome in (first, second):
        if outcome.returncode != 0:
            result.add("hang" if outcome.returncode is None else "crash", probe, outcome.stderr.strip()[-200:])
            return
    if large_s > LINEAR_RATIO * small_s:
        result.add("hang", probe, f"{small_s:.1f} s -> {large_s:.1f} s: grows faster than the notes")


def _sigterm_probe(result: AreaResult, workdir: Path) -> None:
    """SIGTERM while a folder run is writing a lead sheet: exit 143 and no temporary file."""
    folder = workdir / "term"
    folder.mkdir()
    for index in range(6):
        (folder / f"g{index:03d}.mid").write_bytes(_midi(_melody_events(600, (TEMPO, METER))))
    out, xml = workdir / "term-out", workdir / "term-xml"
    probe = "SIGTERM during harmonize of a folder"
    result.probes += 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "bridge", "harmonize", str(folder), "-o", str(out),
                                "--musicxml", str(xml)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if any(p.name.startswith(".") for d in (out, xml) if d.exists() for p in d.iterdir()):
                break
            time.sleep(0.005)
        if process.poll() is not None:
            result.add("crash", probe, f"finished (exit {process.returncode}) before writing anything")
            return
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        result.add("hang", probe, "did not stop within 60 s of SIGTERM")
        return
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if "Traceback" in err:
        result.add("crash", probe, err.strip().splitlines()[-1][:200])
    elif process.returncode != 128 + signal.SIGTERM:
        result.add("crash", probe, f"exit {process.returncode}, expected {128 + signal.SIGTERM}")
    left = [p for d in (out, xml) if d.exists() for p in d.iterdir() if p.name.startswith(".")]
    if left:
        result.add("partial-file", probe, ", ".join(p.name for p in left))


def run(workdir: Path, quick: bool) -> AreaResult:
    result = AreaResult("offline")
    _midi_probes(result, workdir, quick)
    _folder_probe(result, workdir)
    _curve_probes(result, workdir, quick)
    _scaling_probe(result, workdir, quick)
    _sigterm_probe(result, workdir)
    return result
