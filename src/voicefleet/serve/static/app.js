// The voicefleet page: calls the public HTTP API (/v1/...) like any other client.
// Plain script, no dependencies, no build step. Everything shown from the server is set as text
// (never parsed as HTML).
"use strict";

const KEY_STORE = "voicefleet.apiKey"; // sessionStorage: this tab only, gone when it closes
const KNOBS = ["speed", "seed", "temperature", "top_k", "top_p", "max_tokens"];
const INTEGER_KNOBS = new Set(["seed", "top_k", "max_tokens"]);
const SEED_MAX = 2 ** 31 - 1;

const $ = (id) => document.getElementById(id);
let ttsSchema = {};
let voices = [];
let audioContext = null;
let liveSources = [];
const blobUrls = {};

class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// ---- talking to the API -------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (err) {
    throw new ApiError(0, "could not reach the server (" + err.message + ")", "network");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    let type = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message;
        type = body.error.type;
      }
    } catch (err) {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message, type);
  }
  return response;
}

// ---- messages -----------------------------------------------------------------------------

function showError(err) {
  const box = $("message");
  let text = err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
  if (err instanceof ApiError && err.status === 401) {
    text = (apiKey() ? "API key refused: " : "This server needs an API key: ") + text;
    showKeyPanel();
  } else if (err instanceof ApiError && err.status === 403) {
    text = "Not allowed with this API key: " + text;
  }
  box.textContent = text;
  box.className = "error";
  box.hidden = false;
  setStatus("");
}

function showInfo(text) {
  const box = $("message");
  box.textContent = text;
  box.className = "info";
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

async function busy(label, work) {
  clearMessage();
  setStatus(label);
  const buttons = document.querySelectorAll("main button");
  buttons.forEach((b) => { b.disabled = true; });
  document.body.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    document.body.removeAttribute("aria-busy");
  }
}

// ---- API key ------------------------------------------------------------------------------

function showKeyPanel() {
  $("key-panel").hidden = false;
  $("api-key").focus();
}

function useKey(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
  $("api-key").value = "";
  loadVoices();
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORE);
  $("api-key").value = "";
  renderVoices([]);
  showInfo("API key forgotten.");
}

// ---- knobs from the API's own schema (defaults and bounds are defined once, on the server) --

function numberBounds(prop) {
  const options = prop.anyOf ? prop.anyOf.filter((p) => p.type !== "null") : [prop];
  return options[0] || {};
}

async function loadSchema() {
  const response = await api("openapi.json");
  const spec = await response.json();
  ttsSchema = spec.components.schemas.TTSRequest.properties;
  for (const name of KNOBS) {
    const input = $(name);
    const prop = ttsSchema[name];
    if (!prop) continue;
    const bounds = numberBounds(prop);
    const min = bounds.minimum !== undefined ? bounds.minimum : bounds.exclusiveMinimum;
    const max = bounds.maximum !== undefined ? bounds.maximum : bounds.exclusiveMaximum;
    if (min !== undefined) input.min = min;
    if (max !== undefined) input.max = max;
    if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
    if (prop.description) input.title = prop.description;
  }
  const langProp = ttsSchema.lang || {};
  const langs = langProp.enum || ["zh"];
  for (const select of [$("lang"), $("prompt-lang")]) {
    select.replaceChildren(...langs.map((code) => new Option(code, code)));
    select.value = langProp.default || langs[0];
  }
}

// ---- voices -------------------------------------------------------------------------------

function formatValue(value) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(3);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function lineageText(voice) {
  const l = voice.lineage || {};
  const parts = [];
  if (l.sweep) parts.push("sweep " + l.sweep + (l.trial ? ", trial " + l.trial : "") +
                          (l.round !== undefined ? ", round " + l.round : ""));
  else if (l.sovits_run || l.gpt_run) {
    parts.push("runs " + [l.sovits_run, l.gpt_run].filter(Boolean).filter((r, i, a) => a.indexOf(r) === i).join(", "));
  }
  if (l.source) parts.push(l.source);
  if (l.dataset) parts.push("dataset " + l.dataset);
  return parts.join("; ") || "-";
}

function evaluationText(voice) {
  const summary = voice.evaluation && (voice.evaluation.summary || voice.evaluation);
  if (!summary || typeof summary !== "object") return "-";
  return Object.entries(summary).filter(([k]) => k !== "n")
    .map(([k, v]) => k + " " + formatValue(v)).join(" · ") || "-";
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function button(label, onClick, cls, accessibleName) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  if (accessibleName) b.setAttribute("aria-label", accessibleName);
  b.addEventListener("click", onClick);
  return b;
}

function renderVoices(list) {
  voices = list;
  const rows = list.map((v) => {
    const tr = document.createElement("tr");
    tr.dataset.voice = v.voice_id;
    const id = cell(v.voice_id);
    id.title = v.prompt_text ? "Reference transcript: " + v.prompt_text : "";
    const actions = document.createElement("td");
    actions.className = "actions";
    if (v.kind === "sweep" || v.kind === "trained") {
      actions.append(button("Reports", () => showReports(v.voice_id), "secondary", "Reports of " + v.voice_id));
    }
    actions.append(button("Delete", () => confirmDelete(v.voice_id), "danger", "Delete " + v.voice_id));
    tr.append(id, cell(String(v.version)), cell(v.kind), cell(lineageText(v)), cell(evaluationText(v)), actions);
    return tr;
  });
  $("voice-rows").replaceChildren(...rows);
  $("no-voices").hidden = list.length > 0;
  for (const [select, blank] of [[$("voice-a"), false], [$("voice-b"), true]]) {
    const previous = select.value;
    const options = list.map((v) => new Option(v.voice_id, v.voice_id));
    if (blank) options.unshift(new Option("(choose for A/B)", ""));
    select.replaceChildren(...options);
    if (list.some((v) => v.voice_id === previous)) select.value = previous;
  }
  if (!$("voice-b").value && list.length > 1) $("voice-b").value = list[1].voice_id;
}

async function loadVoices() {
  try {
    const response = await api("v1/voices");
    const body = await response.json();
    renderVoices(body.voices);
    if (apiKey()) $("key-panel").hidden = true;
    setStatus(body.voices.length + " voice" + (body.voices.length === 1 ? "" : "s"));
  } catch (err) {
    renderVoices([]);
    showError(err);
  }
}

function confirmDelete(voiceId) {
  const dialog = $("confirm-delete");
  $("confirm-text").textContent = "Delete voice " + voiceId + "? Its weights and reference clip are removed " +
    "from the registry; this cannot be undone.";
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue !== "delete") return;
    busy("Deleting " + voiceId + "…", async () => {
      await api("v1/voices/" + encodeURIComponent(voiceId), { method: "DELETE" });
      await loadVoices();
      showInfo("Deleted voice " + voiceId + ".");
    });
  };
  dialog.showModal();
}

// ---- audio --------------------------------------------------------------------------------

function setBlob(key, blob) {
  if (blobUrls[key]) URL.revokeObjectURL(blobUrls[key]);
  blobUrls[key] = URL.createObjectURL(blob);
  return blobUrls[key];
}

function wavBlob(pcm, rate) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) header.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); header.setUint32(4, 36 + pcm.length, true); text(8, "WAVE");
  text(12, "fmt "); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, rate, true); header.setUint32(28, rate * 2, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, pcm.length, true);
  return new Blob([header.buffer, pcm], { type: "audio/wav" });
}

function startLive() {
  // created inside the click handler: browsers let a page start sound only after a user gesture
  for (const source of liveSources) { try { source.stop(); } catch (err) { /* already ended */ } }
  liveSources = [];
  if (!$("live").checked || !window.AudioContext) return null;
  try {
    audioContext = audioContext || new AudioContext();
    if (audioContext.state === "suspended") audioContext.resume();
    return audioContext;
  } catch (err) {
    return null; // no audio output: the clip still arrives in the player below
  }
}

function livePlayer(context, rate) {
  let next = 0;
  let carry = null;
  return (bytes) => {
    if (carry) { const joined = new Uint8Array(carry.length + bytes.length); joined.set(carry); joined.set(bytes, carry.length); bytes = joined; }
    const usable = bytes.length - (bytes.length % 2);
    carry = usable < bytes.length ? bytes.slice(usable) : null;
    if (!usable) return;
    const samples = new Int16Array(bytes.slice(0, usable).buffer);
    const buffer = context.createBuffer(1, samples.length, rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    next = Math.max(next, context.currentTime + 0.05);
    source.start(next);
    next += buffer.duration;
    liveSources.push(source);
  };
}

function requestBody(voice, seed) {
  const body = { voice, text: $("text").value, lang: $("lang").value, format: "pcm", stream: true };
  for (const name of KNOBS) {
    const raw = $(name).value.trim();
    if (name === "seed") continue;
    if (raw !== "") body[name] = INTEGER_KNOBS.has(name) ? parseInt(raw, 10) : parseFloat(raw);
  }
  if (seed !== null) body.seed = seed;
  return body;
}

function chosenSeed() {
  const raw = $("seed").value.trim();
  return raw === "" ? null : parseInt(raw, 10);
}

// POST /v1/tts with stream=true: fragments arrive as raw 16-bit PCM and are played as they come
// (when `context` is given); the whole clip then goes into the <audio> player and a download link.
async function synthesise(voice, seed, context, player, link) {
  const response = await api("v1/tts", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody(voice, seed)),
  });
  const rate = Number(response.headers.get("X-Sample-Rate")) || 32000;
  const usedSeed = response.headers.get("X-Seed");
  const play = context ? livePlayer(context, rate) : null;
  const reader = response.body.getReader();
  const parts = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    total += value.length;
    if (play) play(value);
  }
  const pcm = new Uint8Array(total - (total % 2));
  let offset = 0;
  for (const part of parts) {
    const take = Math.min(part.length, pcm.length - offset);
    pcm.set(part.subarray(0, take), offset);
    offset += take;
  }
  const url = setBlob(player.id, wavBlob(pcm, rate));
  player.src = url;
  link.href = url;
  link.download = voice + "-seed" + usedSeed + ".wav";
  return { seconds: pcm.length / 2 / rate, seed: usedSeed };
}

function onSynthesise(event) {
  event.preventDefault();
  const voice = $("voice-a").value;
  if (!voice) { showError(new Error("choose a voice first")); return; }
  const context = startLive();
  busy("Synthesising with " + voice + "…", async () => {
    const done = await synthesise(voice, chosenSeed(), context, $("audio-main"), $("download"));
    $("result").hidden = false;
    $("result-info").textContent = voice + ": " + done.seconds.toFixed(2) + " s, seed " + done.seed;
    setStatus("Done: " + done.seconds.toFixed(2) + " s of audio.");
  });
}

function onCompare() {
  const a = $("voice-a").value;
  const b = $("voice-b").value;
  if (!a || !b) { showError(new Error("choose two voices to compare: Voice and Voice B")); return; }
  if (!$("synth-form").reportValidity()) return;
  const seed = chosenSeed() !== null ? chosenSeed() : Math.floor(Math.random() * SEED_MAX);
  busy("Rendering " + a + " and " + b + " with seed " + seed + "…", async () => {
    const first = await synthesise(a, seed, null, $("audio-a"), $("download-a"));
    $("label-a").textContent = "A: " + a + " (" + first.seconds.toFixed(2) + " s, seed " + first.seed + ")";
    const second = await synthesise(b, seed, null, $("audio-b"), $("download-b"));
    $("label-b").textContent = "B: " + b + " (" + second.seconds.toFixed(2) + " s, seed " + second.seed + ")";
    $("ab").hidden = false;
    setStatus("Both clips ready: same text, seed " + seed + ".");
  });
}

// ---- registering a zero-shot voice --------------------------------------------------------

function onRegister(event) {
  event.preventDefault();
  const form = new FormData();
  const voiceId = $("new-voice-id").value.trim();
  form.append("voice_id", voiceId);
  form.append("reference", $("reference").files[0]);
  form.append("prompt_text", $("prompt-text").value);
  form.append("prompt_lang", $("prompt-lang").value);
  busy("Registering " + voiceId + "…", async () => {
    await api("v1/voices", { method: "POST", body: form });
    $("register-form").reset();
    $("prompt-lang").value = (ttsSchema.lang && ttsSchema.lang.default) || "zh";
    await loadVoices();
    $("voice-a").value = voiceId;
    showInfo("Registered voice " + voiceId + ".");
  });
}

// ---- reports: the sweep's trials and plots, the runs' training curves -----------------------

function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

function csvTable(text, caption) {
  const [head, ...body] = parseCsv(text);
  const table = document.createElement("table");
  const cap = document.createElement("caption");
  cap.textContent = caption;
  const thead = document.createElement("thead");
  const tr = document.createElement("tr");
  for (const name of head || []) { const th = document.createElement("th"); th.scope = "col"; th.textContent = name; tr.append(th); }
  thead.append(tr);
  const tbody = document.createElement("tbody");
  for (const values of body) { const r = document.createElement("tr"); r.append(...values.map(cell)); tbody.append(r); }
  table.append(cap, thead, tbody);
  const wrap = document.createElement("div");
  wrap.className = "scroll";
  wrap.append(table);
  return wrap;
}

async function reportFile(file, groupName) {
  const response = await api(file.url);
  const blob = await response.blob();
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  const link = document.createElement("a");
  link.href = setBlob(file.url, blob);
  link.download = groupName + "-" + file.name;
  link.textContent = file.name;
  caption.append(link);
  if (file.media_type.startsWith("image/")) {
    const img = document.createElement("img");
    img.src = link.href;
    img.alt = file.name.replace(/\.png$/, "").replace(/_/g, " ") + " (" + groupName + ")";
    figure.append(img, caption);
  } else if (file.name === "trials.csv") {
    figure.append(csvTable(await blob.text(), "Trials of sweep " + groupName), caption);
  } else {
    figure.append(caption);
  }
  return figure;
}

const GROUP_TITLES = { sweep: "Sweep", sovits_run: "SoVITS training run", gpt_run: "GPT training run" };

async function showReports(voiceId) {
  busy("Loading reports of " + voiceId + "…", async () => {
    const response = await api("v1/voices/" + encodeURIComponent(voiceId) + "/reports");
    const body = await response.json();
    const sections = [];
    for (const group of body.groups) {
      const section = document.createElement("section");
      const h = document.createElement("h3");
      h.textContent = GROUP_TITLES[group.group] + " " + group.name;
      section.append(h);
      for (const file of group.files) section.append(await reportFile(file, group.name));
      sections.push(section);
    }
    if (!sections.length) {
      const p = document.createElement("p");
      p.textContent = "The storage holds no sweep report or training curves for " + voiceId + ".";
      sections.push(p);
    }
    $("reports-title").textContent = "Reports of " + voiceId;
    $("reports-body").replaceChildren(...sections);
    $("reports").hidden = false;
    $("reports-title").scrollIntoView();
    setStatus("");
  });
}

// ---- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("show-key").addEventListener("click", showKeyPanel);
  $("refresh").addEventListener("click", () => { clearMessage(); loadVoices(); });
  $("synth-form").addEventListener("submit", onSynthesise);
  $("compare").addEventListener("click", onCompare);
  $("register-form").addEventListener("submit", onRegister);
  $("close-reports").addEventListener("click", () => { $("reports").hidden = true; });
  try {
    await loadSchema();
  } catch (err) {
    showError(err);
  }
  await loadVoices();
});
