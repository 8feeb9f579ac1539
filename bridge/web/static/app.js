// The scorebridge browser surface: the OSC address table over a WebSocket, as JSON, and the
// bridge's live view (/scorebridge/live: chords, notes, activity, affect) drawn as it plays.
// No build step and no dependencies: plain DOM code.
"use strict";

const PREFIX = "/scorebridge";
const token = new URLSearchParams(location.search).get("token");
const values = new Map();        // address -> last args, re-applied after every redraw
const dragging = new Set();      // controls under the user's finger: feedback waits
const affectHistory = [];        // [time_ms, valence, arousal] when no curve plays
const LANE_BEATS = 16;           // the chord lane's widest window: 4 beats past, 12 ahead
const ROLL_BEATS = 8;            // the piano roll's window (two bars of 4/4)
const SLOT_COLOURS = ["#4fb3ff", "#f0a33c", "#63d471", "#d57bff", "#ff6f91", "#e6d45a"];
let socket = null;
let armed = "";
let live = null;                 // the newest /scorebridge/live value
let curve = [];                  // [time_s, valence, arousal] of the va slot's curve
let described = { slots: {} };
const portCounts = new Map();    // port -> [count, time it last changed]
// What the page showed and when (Date.now()): read by the browser tests, kept short.
const shown = { chords: [], planned: [], states: [] };

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function send(address, args) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ address, args }));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : ""));
  socket.onopen = () => { setConnection(true); send(`${PREFIX}/live`, [1]); };
  socket.onclose = () => { setConnection(false); setTimeout(connect, 1000); };
  socket.onmessage = (event) => {
    for (const [address, args] of JSON.parse(event.data)) receive(address, args);
  };
}

function setConnection(on) {
  const node = document.getElementById("connection");
  node.textContent = on ? "connected" : "disconnected";
  node.className = on ? "on" : "off";
  document.body.dataset.connected = on ? "1" : "0";
}

function showMessage(text, error = false) {
  const node = document.getElementById("message");
  node.textContent = text;
  node.title = text;
  node.className = error ? "error" : "";
}

function receive(address, args) {
  if (address === `${PREFIX}/describe`) return render(JSON.parse(args[0]));
  if (address === `${PREFIX}/live`) return showLive(JSON.parse(args[0]));
  if (address === `${PREFIX}/live/curve`) { curve = JSON.parse(args[0]); return; }
  if (address === `${PREFIX}/error`) return showMessage(args[0], true);
  if (address === `${PREFIX}/learn`) return showLearn(args[0]);
  if (address === `${PREFIX}/learn/done`) return showMessage(`learned: ${args[1]} → ${args[0]}`);
  if (address === `${PREFIX}/panic/done`) return showMessage(`panic: ${args[0]} notes released`);
  values.set(address, args);
  show(address, args[0]);
  if (address === `${PREFIX}/affect/valence` || address === `${PREFIX}/affect/arousal`) recordAffect();
}

function isOn(value) {
  return value === true || value === 1 || value === "1" || value === "true" || value === "True";
}

function formatValue(node, value) {
  if (node.dataset.kind === "float") {
    const step = Number(node.step);
    const digits = step > 0 && step < 1 ? Math.min(3, Math.ceil(-Math.log10(step))) : step >= 1 ? 0 : 2;
    return Number(value).toFixed(digits);
  }
  return String(value);
}

function show(address, value) {
  for (const node of document.querySelectorAll(`[data-address="${CSS.escape(address)}"]`)) {
    node.dataset.value = String(value);
    if (dragging.has(node)) continue;
    if (node.type === "checkbox") node.checked = isOn(value);
    else if (node.classList.contains("lamp") || node.classList.contains("pad")) node.classList.toggle("on", isOn(value) || Number(value) > 0);
    else {
      if (node.tagName === "SELECT" && ![...node.options].some((o) => o.value === String(value))) {
        node.append(el("option", { value: String(value) }, String(value)));  // a value set elsewhere
      }
      node.value = String(value);
    }
    showOutput(node, value);
  }
  if (/\/mute_\d+$/.test(address)) updateSolo();
}

// A slider's value beside it (a select, a box or a number field shows its own).
function showOutput(node, value) {
  const output = node.type === "range" && node.closest(".param, .strip, label")?.querySelector("output");
  if (output) output.textContent = formatValue(node, value);
}

function valueOf(node) {
  if (node.type === "checkbox") return node.checked ? 1 : 0;
  if (node.dataset.kind === "int") return parseInt(node.value, 10);
  if (node.dataset.kind === "float") return parseFloat(node.value);
  return node.value;
}

// A step that gives a slider a few hundred positions: 0.001, 0.01, 0.1, 1...
function niceStep(span) {
  return Math.pow(10, Math.floor(Math.log10(span / 200)));
}

function paramControl(slot, param) {
  const address = `${PREFIX}/${slot}/${param.name}`;
  const common = { "data-address": address, "data-kind": param.kind, id: `${slot}-${param.name}`, title: param.doc || param.name };
  if (param.kind === "bool") return el("input", { ...common, type: "checkbox" });
  if (param.kind === "choice") {
    return el("select", common, ...param.choices.map((c) => el("option", { value: c }, c)));
  }
  if (param.kind === "text" && param.files) {  // a file: one of those in the allowed folders
    return el("select", common, el("option", { value: "none" }, "none"),
      ...param.files.map((path) => el("option", { value: path, title: path }, path.split("/").pop())));
  }
  if (param.kind !== "int" && param.kind !== "float") return el("input", { ...common, type: "text" });
  const bounded = param.minimum !== null && param.maximum !== null;
  const span = bounded ? param.maximum - param.minimum : Infinity;
  // A slider only where its travel means something: a seed or a huge range (a song position in
  // beats, an offset in seconds) is typed.
  const slider = bounded && param.name !== "seed" && span <= 1000;
  const step = param.kind === "int" ? 1 : slider ? niceStep(span) : "any";
  const attributes = { ...common, type: slider ? "range" : "number", step: String(step) };
  if (param.minimum !== null) attributes.min = String(param.minimum);
  if (param.maximum !== null) attributes.max = String(param.maximum);
  const input = el("input", attributes);
  if (param.name !== "seed") return input;
  const fresh = el("button", { type: "button", class: "small", title: "a new random seed", "data-seed": address }, "new");
  fresh.addEventListener("click", () => {
    const seed = Math.floor(Math.random() * Math.min(param.maximum ?? 2147483647, 2147483647));
    input.value = String(seed);
    send(address, [seed]);
  });
  return el("span", { class: "group" }, input, fresh);
}

function learnButton(target) {
  const button = el("button", { type: "button", class: "learn", "data-learn": target, title: `MIDI learn ${target}: click, then move a control` }, "learn");
  button.addEventListener("click", (event) => {
    event.preventDefault();
    if (armed === target) send(`${PREFIX}/learn/cancel`, []);
    else send(`${PREFIX}/learn`, [target]);
  });
  return button;
}

function showLearn(target) {
  armed = target;
  for (const row of document.querySelectorAll("[data-target]")) row.classList.toggle("armed", row.dataset.target === target);
  if (target) showMessage(`learn: move a control to bind it to ${target}`);
}

function row(label, control, target, doc) {
  const node = el("div", { class: "param", "data-target": target },
    el("label", { for: control.id || control.querySelector("[id]")?.id || "", title: doc || label }, label), control, el("output"));
  node.append(target ? learnButton(target) : el("span"));
  return node;
}

function render(description) {
  described = description;
  const main = document.getElementById("slots");
  main.replaceChildren();
  for (const [slot, info] of Object.entries(description.slots)) {
    const section = el("section", { class: "panel slot", id: `slot-${slot}` }, el("h2", {}, `${slot} `, el("span", { class: "hint" }, info.engine)));
    const engine = el("select", { "data-address": `${PREFIX}/${slot}/engine`, "data-kind": "choice", id: `${slot}-engine` },
      ...description.engines.map((name) => el("option", { value: name }, name)));
    section.append(row("engine", engine, `${slot}/engine`));
    section.append(row("enabled", el("input", { type: "checkbox", "data-kind": "bool", id: `${slot}-enabled`,
      "data-address": `${PREFIX}/${slot}/enabled` }), `${slot}/enabled`));
    const stems = info.stems || [];
    const stemParam = /^(gain|mute)_(\d+)$/;
    const mixer = el("div", { class: "mixer" });
    for (const param of info.params) {
      const stem = param.name.match(stemParam);
      if (stem && stems.length) continue;  // drawn as the stems' strips below
      const label = param.name + (param.unit && param.unit !== "file" ? ` (${param.unit})` : "");
      (param.unit === "dB" ? mixer : section).append(row(label, paramControl(slot, param), `${slot}/${param.name}`, param.doc));
    }
    if (stems.length) {
      section.append(el("h3", {}, "Stems ", el("span", { class: "meter mix", "data-meter": `${slot}/mix`, title: "mix level" }, el("span"))),
        stemStrips(slot, info, stems));
    }
    else if (mixer.children.length) section.append(el("h3", {}, "Mixer"), mixer);
    main.append(section);
  }
  renderSurface(description.surface || []);
  bindInputs(document);
  for (const [address, args] of values) show(address, args[0]);
  showLearn(description.learn_armed || "");
}

function stemStrips(slot, info, stems) {
  const box = el("div", { class: "stems" });
  stems.forEach((stem, index) => {
    const n = index + 1;
    const gain = info.params.find((p) => p.name === `gain_${n}`);
    const mute = info.params.find((p) => p.name === `mute_${n}`);
    if (!gain) return;  // stems past the engine's faders keep their default
    const strip = el("div", { class: "strip", "data-target": `${slot}/gain_${n}`, "data-stem": stem.name, style: `--stem: ${stem.colour}` },
      el("span", { class: "stem-name", title: `${stem.name} (${stem.role})` }, stem.name),
      el("span", { class: "hint" }, stem.role));
    strip.append(el("div", { class: "meter", "data-meter": `${slot}/${n}`, title: `${stem.name} level` }, el("span")));
    const fader = paramControl(slot, gain);
    fader.classList.add("fader");
    fader.setAttribute("aria-label", `${stem.name} gain (dB)`);
    strip.append(fader, el("output"));
    if (mute) {
      const box = paramControl(slot, mute);
      box.setAttribute("aria-label", `mute ${stem.name}`);
      const solo = el("button", { type: "button", class: "small solo", "data-solo": String(n), title: `solo ${stem.name}` }, "S");
      solo.addEventListener("click", () => toggleSolo(slot, n, stems.length));
      strip.append(el("span", { class: "group" }, el("label", { class: "mute", "data-target": `${slot}/mute_${n}`, title: `mute ${stem.name}` }, box, "M"), solo));
    }
    strip.append(learnButton(`${slot}/gain_${n}`));
    if (mute) {
      const learnMute = learnButton(`${slot}/mute_${n}`);
      learnMute.textContent = "learn M";
      strip.append(learnMute);
    }
    box.append(strip);
  });
  return box;
}

function toggleSolo(slot, n, count) {
  // Solo = every other stem muted; pressed again (or on another soloed stem), all unmuted.
  const muted = (i) => isOn((values.get(`${PREFIX}/${slot}/mute_${i}`) || [0])[0]);
  const soloed = !muted(n) && [...Array(count).keys()].every((i) => i + 1 === n || muted(i + 1));
  for (let i = 1; i <= count; i++) {
    const value = soloed ? 0 : (i === n ? 0 : 1);
    values.set(`${PREFIX}/${slot}/mute_${i}`, [value]);
    show(`${PREFIX}/${slot}/mute_${i}`, value);
    send(`${PREFIX}/${slot}/mute_${i}`, [value]);
  }
}

function updateSolo() {
  for (const button of document.querySelectorAll(".solo")) {
    const slot = button.closest(".slot").id.slice(5);
    const strips = button.closest(".stems").querySelectorAll(".solo").length;
    const n = Number(button.dataset.solo);
    const muted = (i) => isOn((values.get(`${PREFIX}/${slot}/mute_${i}`) || [0])[0]);
    button.classList.toggle("on", strips > 1 && !muted(n) && [...Array(strips).keys()].every((i) => i + 1 === n || muted(i + 1)));
  }
}

function renderSurface(controls) {
  const panel = document.getElementById("surface");
  const box = document.getElementById("surface-controls");
  box.replaceChildren();
  panel.hidden = controls.length === 0;
  for (const control of controls) {
    if (["trigger", "fixed", "toggle", "momentary"].includes(control.scale)) {
      const pad = el("button", { class: "pad", "data-address": control.address, "data-pad": control.scale, title: control.target }, control.label);
      pad.addEventListener("pointerdown", () => send(control.address, [1.0]));
      pad.addEventListener("pointerup", () => { if (control.scale === "momentary") send(control.address, [0.0]); });
      pad.addEventListener("keydown", (event) => { if (event.key === " " || event.key === "Enter") send(control.address, [1.0]); });
      box.append(pad);
    } else {
      const knob = el("input", { type: "range", min: "0", max: "1", step: "0.001", "data-kind": "float",
        "data-address": control.address, title: control.target });
      box.append(el("label", { class: "knob" }, el("span", {}, control.label), knob, el("output")));
    }
  }
}

function bindInputs(root) {
  for (const node of root.querySelectorAll("[data-address]")) {
    if (node.dataset.bound || node.classList.contains("lamp") || node.classList.contains("pad")) continue;
    node.dataset.bound = "1";
    let frame = 0;
    const push = () => { frame = 0; if (node.value !== "") send(node.dataset.address, [valueOf(node)]); };
    node.addEventListener("input", () => {
      showOutput(node, node.value);
      if (node.type === "range" && !frame) frame = requestAnimationFrame(push);
    });
    node.addEventListener("change", push);
    node.addEventListener("pointerdown", () => dragging.add(node));
    node.addEventListener("pointerup", () => dragging.delete(node));
  }
  for (const button of root.querySelectorAll("[data-send]")) {
    if (button.dataset.bound) continue;
    button.dataset.bound = "1";
    button.addEventListener("click", () => send(button.dataset.send, []));
  }
}

// -- the live view --------------------------------------------------------------------------
function slotColour(slot) {
  const names = Object.keys(described.slots);
  return SLOT_COLOURS[Math.max(0, names.indexOf(slot)) % SLOT_COLOURS.length];
}

function showLive(state) {
  live = state;
  live.receivedAt = performance.now();
  const perBar = state.per_bar || 4;
  const bar = Math.floor(state.beats / perBar) + 1, beat = Math.floor(state.beats % perBar) + 1;
  document.getElementById("position").textContent = `${bar}.${beat}`;
  showChordLanes(state);
  showLights(state);
  showMeters(state);
  const affect = state.affect;
  document.getElementById("affect-now").textContent = `v ${affect.valence.toFixed(2)} · a ${affect.arousal.toFixed(2)}`;
  document.getElementById("affect-source").textContent = `source: ${affect.source}${affect.override ? " · override on" : ""}`;
}

function laneRow(slot) {
  let node = document.querySelector(`.lane-row[data-slot="${CSS.escape(slot)}"]`);
  if (node) return node;
  document.getElementById("no-chords")?.remove();
  node = el("div", { class: "lane-row", "data-slot": slot, style: `--slot: ${slotColour(slot)}` },
    el("div", { class: "lane-head" }, el("span", { class: "slot-name" }, slot),
      el("span", { class: "chord-now", id: `now:${slot}`, "aria-live": "polite" }, "—"),
      el("span", { class: "lane-state hint", id: `state:${slot}` })),
    el("div", { class: "lane", id: `lane:${slot}` }));
  document.getElementById("chord-lanes").append(node);
  return node;
}

function showChordLanes(state) {
  const now = Date.now();
  for (const [slot, info] of Object.entries(state.slots)) {
    const hasChords = info.chords.some((c) => c[1]) || info.planned.length || info.state;
    if (!hasChords && !document.querySelector(`.lane-row[data-slot="${CSS.escape(slot)}"]`)) continue;
    laneRow(slot);
    const chordNode = document.getElementById(`now:${slot}`);
    const chord = info.chord || "—";
    if (chordNode.textContent !== chord) {
      chordNode.textContent = chord;
      shown.chords.push({ slot, chord: info.chord, at: now, read: Math.round(state.time * 1000) });
      if (shown.chords.length > 200) shown.chords.shift();
    }
    const stateNode = document.getElementById(`state:${slot}`);
    if (stateNode.textContent !== (info.state || "")) {
      stateNode.textContent = info.state || "";
      shown.states.push({ slot, state: info.state, at: now, beats: state.beats });
      if (shown.states.length > 200) shown.states.shift();
    }
    const lane = document.getElementById(`lane:${slot}`);
    // 16 beats on a wide lane, fewer on a phone (a chord name needs room): a quarter of them past.
    const span = Math.max(6, Math.min(LANE_BEATS, Math.round(lane.clientWidth / 45)));
    const from = state.beats - span / 4;
    const x = (beats) => `${(100 * (beats - from) / span).toFixed(2)}%`;
    const boxes = [];
    const perBar = state.per_bar || 4;
    for (let b = Math.ceil(from / perBar) * perBar; b < from + span; b += perBar) {
      boxes.push(el("div", { class: "barline", style: `left: ${x(b)}` }, el("span", {}, String(b / perBar + 1))));
    }
    info.chords.forEach(([start, symbol], i) => {
      const end = i + 1 < info.chords.length ? info.chords[i + 1][0] : state.beats;
      if (!symbol || end < from) return;
      const left = Math.max(start, from);
      boxes.push(el("div", { class: "chord past", style: `left: ${x(left)}; width: calc(${x(end)} - ${x(left)})`, title: symbol }, symbol));
    });
    for (const [start, end, symbol] of info.planned) {
      const key = `${slot}@${start}`;
      if (!shown.planned.some((p) => p.key === key)) {
        shown.planned.push({ key, slot, chord: symbol, start, at: now, beats: state.beats });
        if (shown.planned.length > 200) shown.planned.shift();
      }
      if (start >= from + span) continue;  // beyond the lane's window (it is in the log above)
      boxes.push(el("div", { class: "chord planned", "data-start": String(start), style: `left: ${x(start)}; width: calc(${x(Math.min(end, from + span))} - ${x(start)})`, title: `${symbol} at beat ${start}` }, symbol));
    }
    boxes.push(el("div", { class: "playhead", style: `left: ${x(state.beats)}` }));
    lane.replaceChildren(...boxes);
  }
}

// Stem and mix levels of an snc slot: -60 dBFS (empty) to 0 dBFS (full); empty while it is silent.
function showMeters(state) {
  for (const node of document.querySelectorAll("[data-meter]")) {
    const [slot, which] = node.dataset.meter.split("/");
    const levels = state.slots[slot] && state.slots[slot].levels;
    const level = !levels ? null : which === "mix" ? levels.mix : levels.stems[Number(which) - 1];
    node.dataset.level = level === null || level === undefined ? "" : String(level);
    const fill = level === null || level === undefined ? 0 : Math.max(0, Math.min(1, (level + 60) / 60));
    node.firstChild.style.setProperty("--fill", fill.toFixed(3));
    node.title = `${node.title.split(":")[0]}: ${level === null || level === undefined ? "silent" : level.toFixed(1) + " dBFS"}`;
  }
}

function light(key, label, on, title) {
  const box = document.getElementById("lights");
  let node = box.querySelector(`[data-light="${CSS.escape(key)}"]`);
  if (!node) {
    node = el("span", { class: "activity", "data-light": key, title }, el("span", { class: "lamp" }), el("span", { class: "name" }, label), el("span", { class: "latency" }));
    box.append(node);
  }
  node.querySelector(".lamp").classList.toggle("on", on);
  return node;
}

function flashed(key, count, now) {
  const seen = portCounts.get(key);
  if (!seen || seen[0] !== count) portCounts.set(key, [count, seen ? now : -1e9]);
  return now - portCounts.get(key)[1] < 150;
}

function showLights(state) {
  const now = performance.now();
  for (const [port, count] of Object.entries(state.ports.in)) {
    light(`in:${port}`, `▶ ${port.split(":").pop()}`, flashed(`in:${port}`, count, now) || state.input.held.length > 0, `input ${port}`);
  }
  for (const [slot, info] of Object.entries(state.slots)) {
    const node = light(`slot:${slot}`, slot, flashed(`slot:${slot}`, info.outputs, now) || info.sounding.length > 0,
      `slot ${slot} (${info.engine}): latency last / median, longest engine call`);
    node.style.setProperty("--slot", slotColour(slot));
    node.classList.toggle("error", Boolean(info.error));
    node.querySelector(".latency").textContent = info.error ? "error" :
      info.latency_ms === null ? "" : `${info.latency_ms.toFixed(1)} ms`;
    node.querySelector(".latency").title = info.latency_p50_ms === null ? "" :
      `median ${info.latency_p50_ms} ms, longest call ${info.max_process_ms} ms`;
  }
  for (const [port, sounding] of Object.entries(state.ports.out)) {
    light(`out:${port}`, `◀ ${port.split(":").pop()}`, sounding > 0, `output ${port}: ${sounding} notes sounding`);
  }
  for (const node of document.querySelectorAll('[data-light^="out:"]')) {
    if (!(node.dataset.light.slice(4) in state.ports.out)) node.querySelector(".lamp").classList.remove("on");
  }
}

// -- canvases -------------------------------------------------------------------------------
function fitCanvas(canvas) {
  const width = Math.max(1, Math.round(canvas.clientWidth * (window.devicePixelRatio || 1)));
  const height = Math.max(1, Math.round(canvas.clientHeight * (window.devicePixelRatio || 1)));
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  return canvas.getContext("2d");
}

function liveBeats() {
  if (!live) return 0;
  if (!live.playing) return live.beats;
  return live.beats + (performance.now() - live.receivedAt) / 60000 * live.tempo;
}

function drawRoll() {
  const canvas = document.getElementById("roll");
  const context = fitCanvas(canvas);
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!live) return;
  const beats = liveBeats(), from = beats - ROLL_BEATS;
  const lanes = [["", "#d0d0d0", live.input.notes], ...Object.entries(live.slots).map(([slot, info]) => [slot, slotColour(slot), info.notes])];
  const pitches = lanes.flatMap(([, , notes]) => notes.map((n) => n[0]));
  const low = Math.min(48, ...pitches) - 1, high = Math.max(84, ...pitches) + 1;
  const y = (pitch) => canvas.height * (1 - (pitch - low) / (high - low));
  const x = (b) => canvas.width * (b - from) / ROLL_BEATS;
  context.strokeStyle = "#2a2e33";
  for (let b = Math.ceil(from); b <= beats; b++) {
    context.beginPath(); context.moveTo(x(b), 0); context.lineTo(x(b), canvas.height); context.stroke();
  }
  let drawn = 0;
  const rowHeight = Math.max(2, canvas.height / (high - low));
  for (const [, colour, notes] of lanes) {
    context.fillStyle = colour;
    for (const [pitch, start, end] of notes) {
      const stop = end === null ? beats : end;
      if (stop < from) continue;
      context.fillRect(x(Math.max(start, from)), y(pitch) - rowHeight / 2, Math.max(2, x(stop) - x(Math.max(start, from))), rowHeight);
      drawn++;
    }
  }
  canvas.dataset.notes = String(drawn);
}

function recordAffect() {
  const valence = values.get(`${PREFIX}/affect/valence`);
  const arousal = values.get(`${PREFIX}/affect/arousal`);
  affectHistory.push([Date.now(), valence ? Number(valence[0]) : 0, arousal ? Number(arousal[0]) : 0]);
}

function drawAffect() {
  const canvas = document.getElementById("affect-curve");
  const context = fitCanvas(canvas);
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#333";
  context.beginPath(); context.moveTo(0, height / 2); context.lineTo(width, height / 2); context.stroke();
  const yOf = (value) => height * (1 - (value + 1) / 2);
  const affect = live && live.affect;
  let points, xOf, playheadX;
  if (affect && affect.song_s !== undefined && curve.length) {
    // The va slot's curve, 20 s back and 40 s ahead of the transport's position.
    const songS = affect.song_s + (live.playing ? (performance.now() - live.receivedAt) / 1000 : 0);
    xOf = (t) => width * (t - (songS - 20)) / 60;
    points = curve.filter((p) => p[0] >= songS - 22 && p[0] <= songS + 42);
    playheadX = xOf(songS);
    canvas.dataset.playhead = songS.toFixed(2);
  } else {
    // No curve plays: the last 60 s of values, the playhead at now.
    const now = Date.now();
    while (affectHistory.length && affectHistory[0][0] < now - 60000) affectHistory.shift();
    xOf = (t) => width * (1 - (now - t) / 60000);
    points = affectHistory.length ? [...affectHistory, [now, ...affectHistory[affectHistory.length - 1].slice(1)]] : [];
    playheadX = width - 1;
    delete canvas.dataset.playhead;
  }
  [[1, "#4fb3ff"], [2, "#f0a33c"]].forEach(([index, colour]) => {
    context.strokeStyle = colour;
    context.lineWidth = 2;
    context.beginPath();
    points.forEach((point, i) => {
      if (i === 0) context.moveTo(xOf(point[0]), yOf(point[index])); else context.lineTo(xOf(point[0]), yOf(point[index]));
    });
    context.stroke();
  });
  context.lineWidth = 1;
  context.strokeStyle = "#e6e6e6";
  context.beginPath(); context.moveTo(playheadX, 0); context.lineTo(playheadX, height); context.stroke();
  if (affect) {
    context.fillStyle = "#4fb3ff";
    context.beginPath(); context.arc(playheadX, yOf(affect.valence), 4, 0, 2 * Math.PI); context.fill();
    context.fillStyle = "#f0a33c";
    context.beginPath(); context.arc(playheadX, yOf(affect.arousal), 4, 0, 2 * Math.PI); context.fill();
  }
}

function frame() {
  drawRoll();
  drawAffect();
  requestAnimationFrame(frame);
}

window.scorebridgeShown = shown;
bindInputs(document);
connect();
requestAnimationFrame(frame);
