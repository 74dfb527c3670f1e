// outspool's live monitor: a list of executions (/) and an execution's page (/x/ID). No build
// step: ES modules served as they are.
//
// Program output is untrusted: it only ever reaches the page through textContent
// (never innerHTML), and terminal escapes are interpreted, never passed on (ansi.js).
"use strict";

import { LogView, Region } from "./logview.js";

const api = (path) => "/api" + path;
const FINISHED = new Set(["succeeded", "failed", "timed_out", "cancelled", "lost", "damaged"]);
const STATUSES = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "lost"];
const TAIL_BYTES = 256 << 10; // the page first reads about this much of the end of the output
const RANGE = 4 << 20; // bytes per request (the API's maximum)
const HEAD_BYTES = 64 << 20; // output kept in the page before where it started reading

// --- DOM helpers (text only) --------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function call(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(api(path), init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function humanSize(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let size = n, unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit++; }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

function duration(ex) {
  if (!ex.started_at) return "";
  const end = ex.finished_at ? Date.parse(ex.finished_at) : Date.now();
  const s = Math.max(0, (end - Date.parse(ex.started_at)) / 1000);
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function what(ex) {
  if (ex.name) return ex.name;
  if (ex.language) return `${ex.language}: ${(ex.code || "").split("\n")[0]}`;
  return ex.command.join(" ");
}

function badge(status) {
  return el("span", { class: `badge st-${status}`, text: status.replace("_", " "), "data-status": status });
}

function progressBar(ex) {
  const bar = el("progress", { max: 100, class: "bar" });
  if (ex.progress_percent !== null && ex.progress_percent !== undefined) {
    bar.value = Math.max(0, Math.min(100, ex.progress_percent));
  } else if (ex.status === "succeeded") {
    bar.value = 100;
  } else if (ex.status !== "running") {
    bar.value = 0;
  } // running without a percentage: indeterminate
  return el("span", { class: "progress" }, bar,
    el("span", { class: "progress-text", text: ex.progress || "" }));
}

// --- the list ------------------------------------------------------------------------------

let cleanup = () => {};

function submitForm(onError) {
  const language = el("select", { name: "language" },
    ...["python", "bash", "sh", "node"].map((l) => el("option", { value: l, text: l })),
    el("option", { value: "", text: "command (one argument per line)" }));
  const code = el("textarea", { name: "code", placeholder: "print('hello')", spellcheck: "false" });
  const name = el("input", { name: "name", placeholder: "optional" });
  const timeout = el("input", { name: "timeout", type: "number", min: "0", step: "any", placeholder: "seconds" });
  const form = el("form", { class: "submit" },
    el("label", {}, "Language", language),
    el("label", {}, "Name", name),
    el("label", {}, "Timeout", timeout),
    el("button", { type: "submit", text: "Run" }),
    code);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value || null };
    if (timeout.value) body.timeout = Number(timeout.value);
    if (language.value) { body.language = language.value; body.code = code.value; }
    else body.command = code.value.split("\n").filter((a) => a !== "");
    try {
      const ex = await call("POST", "/executions", body);
      location.assign(`/x/${ex.id}`);
    } catch (err) {
      onError(err.message);
    }
  });
  return form;
}

// The filters of the list, read from and written to the address (?status=&name=&label=K=V).
function filterForm(onChange) {
  const params = new URLSearchParams(location.search);
  const status = el("select", { name: "status" }, el("option", { value: "", text: "any status" }),
    ...STATUSES.map((s) => el("option", { value: s, text: s.replace("_", " ") })));
  status.value = params.get("status") || "";
  const name = el("input", { name: "name", placeholder: "name", value: params.get("name") || "" });
  const labels = el("input", { name: "label", placeholder: "KEY=VALUE …",
    value: params.getAll("label").join(" ") });
  const form = el("form", { class: "filters" },
    el("label", {}, "Status", status), el("label", {}, "Name", name),
    el("label", {}, "Labels", labels), el("button", { type: "submit", text: "Filter" }));
  const query = () => {
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (name.value.trim()) q.set("name", name.value.trim());
    for (const label of labels.value.split(/\s+/).filter(Boolean)) q.append("label", label);
    return q;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = query().toString();
    history.replaceState(null, "", q ? `/?${q}` : "/");
    onChange();
  });
  status.addEventListener("change", () => form.requestSubmit());
  return { form, query };
}

function started(ex) {
  if (!ex.started_at) return el("span", { class: "muted", text: "—" });
  const when = new Date(ex.started_at);
  return el("time", { datetime: ex.started_at, title: ex.started_at,
    text: when.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }) });
}

// The exit status as a shell shows it: the exit code, or 128+N when killed by signal N.
function exitOf(ex) {
  if (ex.signal !== null && ex.signal !== undefined) {
    return el("span", { class: "mono", text: String(128 + ex.signal), title: `killed by signal ${ex.signal}` });
  }
  return el("span", { class: "mono", text: ex.exit_code === null ? "" : String(ex.exit_code) });
}

function executionRow(ex) {
  return el("tr", { "data-id": ex.id },
    el("td", { class: "mono" }, el("a", { href: `/x/${ex.id}`, text: ex.id })),
    el("td", {}, badge(ex.status)),
    el("td", { class: "exit" }, exitOf(ex)),
    el("td", { class: "started" }, started(ex)),
    el("td", {}, progressBar(ex)),
    el("td", { text: humanSize(ex.stdout_size + ex.stderr_size) }),
    el("td", { text: duration(ex) }),
    el("td", { class: "what mono", text: what(ex), title: what(ex) }));
}

function showList(root) {
  const error = el("div", { class: "error-box", hidden: true });
  const body = el("tbody");
  const more = el("button", { type: "button", text: "Older", hidden: true });
  const state = { limit: 50, timer: null, stopped: false };
  const fail = (message) => { error.textContent = message; error.hidden = false; };
  const filters = filterForm(() => refresh());
  root.append(
    el("h2", { text: "Run a program" }), submitForm(fail), error,
    el("h2", { text: "Executions" }), filters.form,
    el("table", { class: "executions" },
      el("thead", {}, el("tr", {}, ...["ID", "Status", "Exit", "Started", "Progress", "Output",
        "Duration", "Program"].map((h) => el("th", { text: h })))),
      body),
    more);
  more.addEventListener("click", () => { state.limit += 50; refresh(); });

  async function refresh() {
    clearTimeout(state.timer);
    const q = filters.query();
    q.set("limit", String(state.limit));
    try {
      const page = await call("GET", `/executions?${q}`);
      if (state.stopped) return;
      error.hidden = true;
      body.replaceChildren(...page.executions.map(executionRow));
      more.hidden = page.next === null;
    } catch (err) {
      fail(`cannot list executions: ${err.message}`);
    }
    if (!state.stopped) state.timer = setTimeout(refresh, document.hidden ? 5000 : 1000);
  }
  refresh();
  cleanup = () => { state.stopped = true; clearTimeout(state.timer); };
}

// --- an execution --------------------------------------------------------------------------

function searchBox(view) {
  const input = el("input", { type: "search", id: "search", placeholder: "Search output",
    autocomplete: "off", spellcheck: "false" });
  const count = el("span", { class: "muted search-count", id: "search-count" });
  const show = ([at, all]) => {
    count.textContent = view.query ? `${at} / ${all}` : "";
  };
  const step = (direction) => { if (view.query) show(view.step(direction)); };
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { view.setQuery(input.value); show(view.position()); }, 150);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    clearTimeout(timer);
    if (view.query !== input.value.toLowerCase()) view.setQuery(input.value);
    requestAnimationFrame(() => step(event.shiftKey ? -1 : 1));
  });
  setInterval(() => { if (view.query) show(view.position()); }, 500);
  return el("span", { class: "search" }, input,
    el("button", { type: "button", id: "search-prev", text: "↑", title: "previous (Shift+Enter)",
      onclick: () => step(-1) }),
    el("button", { type: "button", id: "search-next", text: "↓", title: "next (Enter)",
      onclick: () => step(1) }),
    count);
}

function linkedLine() {
  const match = location.hash.match(/^#L(\d+)$/);
  return match ? Number(match[1]) - 1 : -1;
}

// Reads pieces of the merged output; `lines` asks where line numbering stands at `offset`.
function pieces(id, offset, limit, lines) {
  return call("GET", `/executions/${id}/pieces?offset=${offset}&limit=${limit}${lines ? "&lines=true" : ""}`);
}

// Per-line times, when the server offers them (`line_times`): [[offset, time], ...].
async function lineTimes(id, start, end) {
  const limit = end === null ? RANGE : Math.max(1, Math.min(RANGE, end - start));
  const range = await call("GET", `/executions/${id}/output?stream=all&offset=${start}&limit=${limit}&timestamps=true`);
  return (range.line_times || []).map(([at, time]) => [start + at, time]);
}

// The end of the output, so that the last screen shows at once: [where it ends, where it began].
async function loadTail(view, ex) {
  const size = ex.stdout_size + ex.stderr_size;
  const start = Math.max(0, size - TAIL_BYTES);
  let page = await pieces(ex.id, start, RANGE, start > 0);
  const tailStart = page.offset;
  view.startAt(page.line || 0);
  for (;;) {
    for (const piece of page.pieces) view.add(piece);
    if (page.eof || page.next_offset >= size || !page.pieces.length) break;
    page = await pieces(ex.id, page.next_offset, RANGE, false);
  }
  return [page.next_offset, tailStart];
}

// The output before the tail (up to HEAD_BYTES of it), read in the background.

async function loadHead(view, ex, end, note, loading) {
  let page = end > HEAD_BYTES ? await pieces(ex.id, end - HEAD_BYTES, RANGE, true) : null;
  const region = new Region(page ? page.line : 0);
  if (page && page.offset > 0) {
    note.textContent = `The first ${humanSize(page.offset)} of output are not shown here; download raw for all of it.`;
    note.hidden = false;
  }
  view.addHead(region);
  let pos = page ? page.offset : 0;
  const from = pos;
  loading.hidden = false;
  while (pos < end) {
    loading.textContent = `loading earlier output… ${Math.floor((100 * (pos - from)) / (end - from))}%`;
    page = await pieces(ex.id, pos, Math.min(RANGE, end - pos), false);
    for (const piece of page.pieces) region.add(piece);
    view.changed();
    if (!page.pieces.length) break;
    pos = page.next_offset;
  }
  loading.hidden = true;
}

function follow(view, ex, offset, render, fail, clear) {
  const source = new EventSource(api(`/executions/${ex.id}/events?offset=${offset}`));
  source.addEventListener("output", (e) => view.add(JSON.parse(e.data)));
  source.addEventListener("gap", (e) => view.add(JSON.parse(e.data)));  // bytes not kept
  const onRecord = (e) => {
    const record = JSON.parse(e.data);
    render(record);
    if (FINISHED.has(record.status)) source.close();
  };
  source.addEventListener("status", onRecord);
  source.addEventListener("progress", onRecord);
  source.addEventListener("problem", (e) => { fail(JSON.parse(e.data).error); source.close(); });
  source.addEventListener("open", clear);
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) fail("connection lost; reconnecting…");
  });
  return source;
}

function toolbar(id, view) {
  const toggles = ["stdout", "stderr"].map((stream) => {
    const box = el("input", { type: "checkbox", checked: true, name: stream });
    box.addEventListener("change", () => view.setHidden(stream, !box.checked));
    return el("label", {}, box, ` ${stream}`);
  });
  const times = el("input", { type: "checkbox", id: "timestamps" });
  times.addEventListener("change", () => view.setShowTimes(times.checked));
  const timesToggle = el("label", { id: "timestamps-toggle", hidden: true }, times, " timestamps");
  const downloads = ["all", "stdout", "stderr"].map((stream) =>
    el("a", { href: api(`/executions/${id}/raw?stream=${stream}`), download: "", class: `raw-${stream}`,
      text: stream === "all" ? "download raw" : stream }));
  const bar = el("div", { class: "toolbar" }, ...toggles, timesToggle, searchBox(view),
    el("span", { class: "muted", text: "|" }), ...downloads);
  return { bar, timesToggle };
}

function showExecution(root, id) {
  const header = el("div", { class: "head" });
  const progress = el("div", { class: "progress-line" });
  const error = el("div", { class: "error-box", hidden: true });
  const note = el("div", { class: "note", hidden: true });
  const loading = el("div", { class: "note", id: "loading", hidden: true });
  const log = el("div", { class: "log", id: "log", tabindex: "0" });
  const cancel = el("button", { type: "button", class: "danger", id: "cancel", text: "Cancel" });
  const resume = el("button", { type: "button", id: "follow", class: "follow", hidden: true,
    text: "↓ Follow output" });
  const view = new LogView(log, {
    fetchTimes: (start, end) => lineTimes(id, start, end),
    onFollow: (following) => { resume.hidden = following; },
  });
  resume.addEventListener("click", () => view.resume());
  const tools = toolbar(id, view);
  tools.bar.prepend(cancel);
  root.append(
    el("p", {}, el("a", { href: "/", text: "← all executions" })),
    header, progress, tools.bar,
    error, note, loading, el("div", { class: "log-box" }, log, resume));
  const fail = (message) => { error.textContent = message; error.hidden = false; };
  let source = null;
  let ended = null; // the final record once seen: an older record (a late answer) never hides it

  function render(record) {
    if (FINISHED.has(record.status)) ended = record;
    const ex = ended || record;
    const parts = [
      el("span", { class: "title mono", text: what(ex) }),
      badge(ex.status),
      el("span", { class: "muted mono", text: ex.id }),
      ex.status !== "running" && ex.status !== "queued" ? el("span", {}, "exit ", exitOf(ex)) : null,
      el("span", { class: "muted" }, started(ex)),
      el("span", { class: "muted", text: duration(ex) }),
      ex.reason ? el("span", { class: "muted", text: ex.reason }) : null,
      ex.damage ? el("span", { class: "muted", text: ex.damage }) : null,
      ex.status === "queued" ? el("span", { class: "muted", text: "waiting for a worker (outspool worker)" }) : null];
    header.replaceChildren(...parts.filter((part) => part !== null));
    progress.replaceChildren(progressBar(ex));
    cancel.disabled = FINISHED.has(ex.status) || ex.cancel_requested;
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { render(await call("POST", `/executions/${id}/cancel`)); } catch (err) { fail(err.message); }
  });

  const goToLine = () => { const n = linkedLine(); if (n >= 0) view.highlight(n); };
  window.addEventListener("hashchange", goToLine);

  async function start() {
    let ex;
    try { ex = await call("GET", `/executions/${id}`); } catch (err) { fail(err.message); return; }
    render(ex);
    try {
      const [offset, tailStart] = await loadTail(view, ex);
      goToLine();
      if (!FINISHED.has(ex.status)) {
        source = follow(view, ex, offset, render, fail, () => { error.hidden = true; });
      }
      // The toggle shows only when the server gives per-line times (never made up here).
      const range = await call("GET", `/executions/${ex.id}/output?offset=0&limit=1&timestamps=true`);
      tools.timesToggle.hidden = !("line_times" in range);
      if (tailStart > 0) await loadHead(view, ex, tailStart, note, loading);
      log.dataset.complete = "true"; // all the output up to where following began is here
    } catch (err) {
      fail(err.message);
    }
  }
  start();
  cleanup = () => { if (source) source.close(); window.removeEventListener("hashchange", goToLine); };
}

// --- routing -------------------------------------------------------------------------------

function route() {
  const old = location.hash.match(/^#\/x\/([0-9a-z]{1,32})$/); // addresses of earlier versions
  if (old) { location.replace(`/x/${old[1]}`); return; }
  cleanup();
  cleanup = () => {};
  const root = document.getElementById("app");
  root.replaceChildren();
  const match = location.pathname.match(/^\/x\/([0-9a-z]{1,32})$/);
  if (match) showExecution(root, match[1]);
  else showList(root);
}

route();
