// dgemma playground: the OpenAI-compatible endpoints of this server, with the canvas drawn live
// from the draft stream (stream_options.include_drafts). Plain JavaScript, no network beyond this
// server; every URL is relative, so the page works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { mode: "chat", history: [], previous: null, model: null, busy: false };
window.dgemma = { drafts: 0, done: 0, errors: 0 }; // counters the browser tests read

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
  if (message) window.dgemma.errors += 1;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  try {
    const response = await fetch("v1/models", { headers: headers() });
    if (!response.ok) {
      $("model").textContent = "";
      showError(await errorText(response));
      return;
    }
    const body = await response.json();
    state.model = body.data[0].id;
    $("model").textContent = state.model;
    showError("");
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
  }
}

const AR_FIELDS = ["max_tokens", "temperature", "seed"]; // mode "ar" takes no diffusion setting

function sampler(names = [...AR_FIELDS, "max_denoising_steps", "entropy_bound"]) {
  const out = {};
  for (const name of names) {
    const raw = $(name).value.trim();
    if (raw !== "") out[name] = Number(raw);
  }
  return out;
}

// ---- the canvas

function pieces(draft) {
  // one string per position: each token decoded alone by the server (`draft.pieces`)
  return draft.token_ids.map((id, i) => (draft.pieces ? draft.pieces[i] : String(id)));
}

// the server's per-position marks: clamped by a constraint, accepted this step, renoised
const MARKS = { c: "clamped", a: "accepted", r: "renoised" };

function drawCanvas(draft) {
  const canvas = $("canvas");
  const texts = pieces(draft);
  const marks = draft.marks || "";
  canvas.replaceChildren(
    ...draft.token_ids.map((id, i) => {
      const span = document.createElement("span");
      const mark = MARKS[marks[i]] || "accepted";
      span.className = `tok ${mark}`;
      span.textContent = texts[i];
      span.title = `position ${i}: token ${id}, ${mark}`;
      return span;
    }),
  );
  $("step").textContent = `canvas ${draft.canvas + 1}, step ${draft.step}, ${draft.accepted} accepted`;
  state.previous = draft;
  window.dgemma.drafts += 1;
}

function drawStats(usage, seconds, firstCanvas) {
  const rows = [
    ["completion tokens", usage.completion_tokens],
    ["canvases", usage.canvases],
    ["denoising steps", usage.denoising_steps],
    ["steps per canvas", usage.canvases ? (usage.denoising_steps / usage.canvases).toFixed(1) : "–"],
    ["tokens per forward", usage.tokens_per_forward],
    ["first canvas", firstCanvas === null ? "–" : `${(firstCanvas * 1000).toFixed(0)} ms`],
    ["total", `${(seconds * 1000).toFixed(0)} ms`],
  ];
  $("stats").replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      return [dt, dd];
    }),
  );
}

// ---- streaming one chat request

// the JSON payloads of a server-sent-event response, one call each, up to [DONE]; an error event throws
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      onEvent(chunk);
    }
  }
}

async function streamChat(messages, extra, onText, onDraft, ar = false) {
  const body = {
    model: state.model,
    messages,
    stream: true,
    stream_options: ar ? { include_usage: true } : { include_usage: true, include_drafts: true },
    ...(ar ? { mode: "ar", ...sampler(AR_FIELDS) } : sampler()),
    ...extra,
  };
  const started = performance.now();
  let firstCanvas = null;
  const response = await fetch("v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await errorText(response));
  let usage = null;
  await readEvents(response, (chunk) => {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      if (choice.draft && onDraft) onDraft(choice.draft);
      const delta = choice.delta || {};
      if (delta.content || delta.reasoning_content) {
        if (firstCanvas === null) firstCanvas = (performance.now() - started) / 1000;
        onText(delta.content || "", delta.reasoning_content || "");
      }
    }
  });
  const seconds = (performance.now() - started) / 1000;
  if (usage) drawStats(usage, seconds, firstCanvas);
  window.dgemma.usage = usage;
  window.dgemma.done += 1;
  return { usage, seconds, first: firstCanvas };
}

// ---- chat mode

function drawHistory() {
  $("history").replaceChildren(
    ...state.history.map((m) => {
      const div = document.createElement("div");
      div.className = `msg ${m.role}`;
      if (m.reasoning) {
        const r = document.createElement("div");
        r.className = "reasoning";
        r.textContent = m.reasoning;
        div.append(r);
      }
      for (const url of m.images || []) {
        const img = document.createElement("img");
        img.className = "thumb";
        img.src = url;
        div.append(img);
      }
      div.append(document.createTextNode(m.content));
      return div;
    }),
  );
}

async function sendChat(event) {
  event.preventDefault();
  if (state.busy) return;
  const text = $("prompt").value.trim();
  if (!text) return;
  const images = await Promise.all([...$("images").files].map(dataUrl));
  state.history.push({ role: "user", content: text, images });
  const reply = { role: "assistant", content: "", reasoning: "" };
  state.history.push(reply);
  $("prompt").value = "";
  $("images").value = "";
  drawHistory();
  const extra = $("thinking").checked ? { chat_template_kwargs: { enable_thinking: true } } : {};
  const messages = state.history.slice(0, -1).map(asMessage);
  await run(async () => {
    await streamChat(messages, extra, (content, reasoning) => {
      reply.content += content;
      reply.reasoning += reasoning;
      drawHistory();
    }, drawCanvas);
  }, () => state.history.splice(-2, 2));
  drawHistory();
}

// an image file as a data: URL, which the server takes in `image_url` parts (it fetches nothing)
function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function asMessage(m) {
  if (!m.images || !m.images.length) return { role: m.role, content: m.content };
  const parts = m.images.map((url) => ({ type: "image_url", image_url: { url } }));
  return { role: m.role, content: [...parts, { type: "text", text: m.content }] };
}

// ---- sudoku mode

function cellsOf(text) {
  return text.replace(/\s/g, "").replace(/\./g, "0");
}

function drawBoard(puzzle, grid, previous) {
  $("board").replaceChildren(
    ...Array.from({ length: 81 }, (_, i) => {
      const cell = document.createElement("div");
      const given = puzzle[i] !== "0";
      const digit = given ? puzzle[i] : grid[i] || "";
      cell.className = `cell${given ? " given" : ""}${!given && previous && previous[i] !== grid[i] ? " changed" : ""}`;
      cell.textContent = digit === "0" ? "" : digit;
      return cell;
    }),
  );
}

// POST /v1/sudoku: the givens clamped in the canvas (as `dgemma sudoku solve` does); the server
// says whether the grid is a solution
async function solveSudoku(event) {
  event.preventDefault();
  if (state.busy) return;
  const puzzle = cellsOf($("puzzle").value);
  let shown = null;
  drawBoard(puzzle, "", null);
  $("verdict").textContent = "";
  await run(async () => {
    const started = performance.now();
    let firstCanvas = null;
    const body = { model: state.model, puzzle, stream: true, include_drafts: true, ...sampler(["seed"]) };
    const response = await fetch("v1/sudoku", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await errorText(response));
    let result = null;
    await readEvents(response, (chunk) => {
      if (chunk.object === "sudoku.solution") {
        result = chunk;
        return;
      }
      for (const choice of chunk.choices || []) {
        if (choice.text && firstCanvas === null) firstCanvas = (performance.now() - started) / 1000;
        if (!choice.draft) continue;
        drawCanvas(choice.draft);
        const grid = cellsOf(choice.draft.text).slice(0, 81);
        drawBoard(puzzle, grid, shown);
        shown = grid;
      }
    });
    if (!result) throw new Error("the server sent no solution");
    drawBoard(puzzle, result.grid, null);
    $("verdict").className = result.solved ? "ok" : "bad";
    $("verdict").textContent = result.solved ? "solved: a valid grid" : "not a valid solution";
    $("board").dataset.valid = String(result.solved);
    drawStats(result.usage, (performance.now() - started) / 1000, firstCanvas);
    window.dgemma.usage = result.usage;
    window.dgemma.done += 1;
  });
}

// ---- infill mode: /v1/completions with `suffix` (the gap between the two texts)

async function fillGap(event) {
  event.preventDefault();
  if (state.busy) return;
  const prefix = $("prefix").value, suffix = $("suffix").value;
  $("infill-result").textContent = "";
  $("infill-verdict").textContent = "";
  await run(async () => {
    const started = performance.now();
    const body = { model: state.model, prompt: prefix, suffix, ...sampler() };
    const response = await fetch("v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await errorText(response));
    const out = await response.json();
    const fill = out.choices[0].text;
    const mark = document.createElement("mark");
    mark.textContent = fill;
    $("infill-result").replaceChildren(document.createTextNode(prefix), mark, document.createTextNode(suffix));
    $("infill-result").dataset.fill = fill;
    const tried = Object.entries(out.infill.candidates).map(([n, s]) => `${n}: ${Number(s).toFixed(3)}`);
    $("infill-verdict").textContent = `${out.infill.length} tokens chosen (mean gap entropy per length: ${tried.join(", ")})`;
    drawStats(out.usage, (performance.now() - started) / 1000, null);
    window.dgemma.usage = out.usage;
    window.dgemma.done += 1;
  });
}

// ---- JSON mode: response_format json_schema (the server guarantees the result validates)

async function generateJson(event) {
  event.preventDefault();
  if (state.busy) return;
  let schema;
  try {
    schema = JSON.parse($("schema").value);
  } catch (err) {
    showError(`the schema is not JSON: ${err.message}`);
    return;
  }
  $("json-result").textContent = "";
  $("json-verdict").textContent = "";
  await run(async () => {
    const started = performance.now();
    const body = {
      model: state.model,
      messages: [{ role: "user", content: $("json-prompt").value }],
      response_format: { type: "json_schema", json_schema: { name: "playground", schema } },
      ...sampler(),
    };
    const response = await fetch("v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await errorText(response));
    const out = await response.json();
    const text = out.choices[0].message.content;
    $("json-result").textContent = JSON.stringify(JSON.parse(text), null, 2);
    $("json-result").dataset.raw = text;
    $("json-verdict").className = "ok";
    $("json-verdict").textContent =
      `valid against the schema (checked by the server), ${out.usage.json_rounds} round(s), ` +
      `${out.usage.json_repaired_slots} repaired slot(s)`;
    drawStats(out.usage, (performance.now() - started) / 1000, null);
    window.dgemma.usage = out.usage;
    window.dgemma.done += 1;
  });
}

// ---- compare mode: the same prompt and seed, block diffusion then next-token decoding (`mode: "ar"`),
// one after the other so neither slows the other down

function drawRun(id, text, run) {
  const pane = $(id);
  pane.querySelector(".text").textContent = text;
  if (!run) return;
  const u = run.usage || { completion_tokens: 0 };
  const rate = run.seconds > 0 ? (u.completion_tokens / run.seconds).toFixed(1) : "–";
  const forwards = id === "cmp-ar" ? `${u.completion_tokens} forwards` : `${u.denoising_steps} denoising steps, ${u.canvases} canvases`;
  pane.querySelector(".timing").textContent =
    `${(run.seconds * 1000).toFixed(0)} ms, ${u.completion_tokens} tokens, ${rate} tokens/s, ${forwards}`;
}

async function compare(event) {
  event.preventDefault();
  if (state.busy) return;
  const messages = [{ role: "user", content: $("cmp-prompt").value }];
  const texts = { diffusion: "", ar: "" };
  drawRun("cmp-diffusion", "", null);
  drawRun("cmp-ar", "", null);
  window.dgemma.compare = null;
  await run(async () => {
    const dif = await streamChat(messages, {}, (c) => { texts.diffusion += c; drawRun("cmp-diffusion", texts.diffusion, null); }, drawCanvas);
    drawRun("cmp-diffusion", texts.diffusion, dif);
    const ar = await streamChat(messages, {}, (c) => { texts.ar += c; drawRun("cmp-ar", texts.ar, null); }, null, true);
    drawRun("cmp-ar", texts.ar, ar);
    const ratio = dif.seconds > 0 ? ar.seconds / dif.seconds : 0;
    $("cmp-verdict").textContent = `next-token decoding took ${ratio.toFixed(2)}x the time of block diffusion on this prompt`;
    window.dgemma.compare = { diffusion: { ...dif, text: texts.diffusion }, ar: { ...ar, text: texts.ar } };
  });
}

// ---- shared

const BUTTONS = "#send, #solve, #generate-json, #fill, #compare";
const MODES = ["chat", "infill", "json", "sudoku", "compare"];

async function run(work, onFail) {
  state.busy = true;
  for (const b of document.querySelectorAll(BUTTONS)) b.disabled = true;
  showError("");
  state.previous = null;
  try {
    if (!state.model) await loadModel();
    if (!state.model) throw new Error($("error").textContent || "no model");
    await work();
  } catch (err) {
    if (onFail) onFail();
    showError(String(err.message || err));
  } finally {
    state.busy = false;
    for (const b of document.querySelectorAll(BUTTONS)) b.disabled = false;
  }
}

function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.mode === mode);
  for (const m of MODES) $(`${m}-mode`).hidden = mode !== m;
}

$("chat-form").addEventListener("submit", sendChat);
$("sudoku-form").addEventListener("submit", solveSudoku);
$("json-form").addEventListener("submit", generateJson);
$("infill-form").addEventListener("submit", fillGap);
$("compare-form").addEventListener("submit", compare);
$("clear").addEventListener("click", () => { state.history = []; drawHistory(); });
for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
$("key").value = localStorage.getItem("dgemma-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("dgemma-key", $("key").value); loadModel(); });
const requested = new URLSearchParams(location.search).get("mode");
if (MODES.includes(requested)) setMode(requested);
drawBoard(cellsOf($("puzzle").value), "", null);
loadModel();
