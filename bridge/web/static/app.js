// The scorebridge browser surface: the OSC address table over a WebSocket, as JSON.
// No build step and no dependencies: plain DOM code.
"use strict";

const PREFIX = "/scorebridge";
const token = new URLSearchParams(location.search).get("token");
const values = new Map();        // address -> last args, re-applied after every redraw
const dragging = new Set();      // controls under the user's finger: feedback waits
const affectHistory = [];        // [time_ms, valence, arousal]
let socket = null;
let armed = "";

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
  socket.onopen = () => setConnection(true);
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
  node.className = error ? "error" : "";
}

function receive(address, args) {
  if (address === `${PREFIX}/describe`) return render(JSON.parse(args[0]));
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
  if (node.dataset.kind === "float") return Number(value).toFixed(2);
  return String(value);
}

function show(address, value) {
  for (const node of document.querySelectorAll(`[data-address="${CSS.escape(address)}"]`)) {
    node.dataset.value = String(value);
    if (dragging.has(node)) continue;
    if (node.type === "checkbox") node.checked = isOn(value);
    else if (node.classList.contains("lamp") || node.classList.contains("pad")) node.classList.toggle("on", isOn(value) || Number(value) > 0);
    else node.value = String(value);
    const label = node.closest("label");  // a lamp or pad has no value text of its own
    const output = label && label.querySelector("output");
    if (output) output.textContent = formatValue(node, value);
  }
}

function valueOf(node) {
  if (node.type === "checkbox") return node.checked ? 1 : 0;
  if (node.dataset.kind === "int") return parseInt(node.value, 10);
  if (node.dataset.kind === "float") return parseFloat(node.value);
  return node.value;
}

function paramControl(slot, param) {
  const address = `${PREFIX}/${slot}/${param.name}`;
  const common = { "data-address": address, "data-kind": param.kind, id: `${slot}-${param.name}`, title: param.doc };
  if (param.kind === "bool") return el("input", { ...common, type: "checkbox" });
  if (param.kind === "choice") {
    return el("select", common, ...param.choices.map((c) => el("option", { value: c }, c)));
  }
  if (param.kind !== "int" && param.kind !== "float") return el("input", { ...common, type: "text" });
  const bounded = param.minimum !== null && param.maximum !== null;
  const step = param.kind === "int" ? 1 : bounded ? (param.maximum - param.minimum) / 1000 : "any";
  const attributes = { ...common, type: bounded ? "range" : "number", step: String(step) };
  if (param.minimum !== null) attributes.min = String(param.minimum);
  if (param.maximum !== null) attributes.max = String(param.maximum);
  return el("input", attributes);
}

function learnButton(target) {
  const button = el("button", { class: "learn", "data-learn": target, title: "MIDI learn: click, then move a control" }, "learn");
  button.addEventListener("click", () => {
    if (armed === target) send(`${PREFIX}/learn/cancel`, []);
    else send(`${PREFIX}/learn`, [target]);
  });
  return button;
}

function showLearn(target) {
  armed = target;
  for (const row of document.querySelectorAll(".param")) row.classList.toggle("armed", row.dataset.target === target);
  if (target) showMessage(`learn: move a control to bind it to ${target}`);
}

function row(label, control, target) {
  const node = el("label", { class: "param", "data-target": target }, el("span", {}, label), control, el("output"));
  if (target) node.append(learnButton(target));
  return node;
}

function render(description) {
  const main = document.getElementById("slots");
  main.replaceChildren();
  for (const [slot, info] of Object.entries(description.slots)) {
    const section = el("section", { class: "panel slot", id: `slot-${slot}` }, el("h2", {}, `${slot} (${info.engine})`));
    const engine = el("select", { "data-address": `${PREFIX}/${slot}/engine`, "data-kind": "choice", id: `${slot}-engine` },
      ...description.engines.map((name) => el("option", { value: name }, name)));
    section.append(row("engine", engine, `${slot}/engine`));
    section.append(row("enabled", el("input", { type: "checkbox", "data-kind": "bool", id: `${slot}-enabled`,
      "data-address": `${PREFIX}/${slot}/enabled` }), `${slot}/enabled`));
    const mixer = el("div", { class: "mixer" });
    for (const param of info.params) {
      const label = param.name + (param.unit ? ` (${param.unit})` : "");
      (param.unit === "dB" ? mixer : section).append(row(label, paramControl(slot, param), `${slot}/${param.name}`));
    }
    if (mixer.children.length) section.append(el("h3", {}, "Mixer"), mixer);
    main.append(section);
  }
  renderSurface(description.surface || []);
  bindInputs(document);
  for (const [address, args] of values) show(address, args[0]);
  showLearn(description.learn_armed || "");
}

function renderSurface(controls) {
  const panel = document.getElementById("surface");
  const box = document.getElementById("surface-controls");
  box.replaceChildren();
  panel.hidden = controls.length === 0;
  for (const control of controls) {
    if (["trigger", "fixed", "toggle", "momentary"].includes(control.scale)) {
      const pad = el("button", { class: "pad", "data-address": control.address, "data-pad": control.scale }, control.label);
      pad.addEventListener("pointerdown", () => send(control.address, [1.0]));
      pad.addEventListener("pointerup", () => { if (control.scale === "momentary") send(control.address, [0.0]); });
      box.append(pad);
    } else {
      const knob = el("input", { type: "range", min: "0", max: "1", step: "0.001", "data-kind": "float",
        "data-address": control.address });
      box.append(el("label", {}, control.label, knob, el("output")));
    }
  }
}

function bindInputs(root) {
  for (const node of root.querySelectorAll("[data-address]")) {
    if (node.dataset.bound || node.classList.contains("lamp") || node.classList.contains("pad")) continue;
    node.dataset.bound = "1";
    let frame = 0;
    const push = () => { frame = 0; send(node.dataset.address, [valueOf(node)]); };
    node.addEventListener("input", () => {
      const label = node.closest("label");
      const output = label && label.querySelector("output");
      if (output) output.textContent = formatValue(node, node.value);
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

function recordAffect() {
  const valence = values.get(`${PREFIX}/affect/valence`);
  const arousal = values.get(`${PREFIX}/affect/arousal`);
  affectHistory.push([Date.now(), valence ? Number(valence[0]) : 0, arousal ? Number(arousal[0]) : 0]);
}

function drawAffect() {
  const canvas = document.getElementById("va-curve");
  const context = canvas.getContext("2d");
  const now = Date.now();
  while (affectHistory.length && affectHistory[0][0] < now - 60000) affectHistory.shift();
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#333";
  context.beginPath();
  context.moveTo(0, canvas.height / 2);
  context.lineTo(canvas.width, canvas.height / 2);
  context.stroke();
  const points = affectHistory.length ? [...affectHistory, [now, ...affectHistory[affectHistory.length - 1].slice(1)]] : [];
  [[1, "#4fb3ff"], [2, "#f0a33c"]].forEach(([index, color]) => {
    context.strokeStyle = color;
    context.beginPath();
    points.forEach((point, i) => {
      const x = canvas.width * (1 - (now - point[0]) / 60000);
      const y = canvas.height * (1 - (point[index] + 1) / 2);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    });
    context.stroke();
  });
  requestAnimationFrame(drawAffect);
}

bindInputs(document);
connect();
requestAnimationFrame(drawAffect);
