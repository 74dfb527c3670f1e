// outspool's live monitor: a list of executions and a live log view. No build step.
//
// Program output is untrusted: it only ever reaches the page through textContent
// (never innerHTML), and every terminal escape sequence other than colours is dropped.
"use strict";

const api = (path) => "/api" + path;
const FINISHED = new Set(["succeeded", "failed", "timed_out", "cancelled", "lost"]);
const MAX_LINES = 20000; // lines kept in the log view; older ones are dropped from the page
const START_WINDOW = 2 << 20; // a long log is shown from its last 2 MiB (the raw link has it all)

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

// --- the terminal renderer ----------------------------------------------------------------

const SGR_RESET = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };

function colour256(n) {
  if (n < 16) return { index: n };
  if (n < 232) {
    const c = n - 16, level = (v) => (v === 0 ? 0 : 55 + v * 40);
    return { rgb: [level(Math.floor(c / 36)), level(Math.floor(c / 6) % 6), level(c % 6)] };
  }
  const grey = 8 + (n - 232) * 10;
  return { rgb: [grey, grey, grey] };
}

function applySgr(state, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(state, SGR_RESET);
    else if (c === 1) state.bold = true;
    else if (c === 2) state.dim = true;
    else if (c === 3) state.italic = true;
    else if (c === 4) state.underline = true;
    else if (c === 22) state.bold = state.dim = false;
    else if (c === 23) state.italic = false;
    else if (c === 24) state.underline = false;
    else if (c >= 30 && c <= 37) state.fg = { index: c - 30 };
    else if (c >= 90 && c <= 97) state.fg = { index: c - 90 + 8 };
    else if (c >= 40 && c <= 47) state.bg = { index: c - 40 };
    else if (c >= 100 && c <= 107) state.bg = { index: c - 100 + 8 };
    else if (c === 39) state.fg = null;
    else if (c === 49) state.bg = null;
    else if (c === 38 || c === 48) {
      let colour = null;
      if (codes[i + 1] === 5 && i + 2 < codes.length) { colour = colour256(codes[i + 2] & 255); i += 2; }
      else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        colour = { rgb: codes.slice(i + 2, i + 5).map((v) => v & 255) }; i += 4;
      }
      if (c === 38) state.fg = colour; else state.bg = colour;
    }
  }
}

function styleKey(s) {
  return JSON.stringify(s);
}

function styledSpan(state) {
  const span = document.createElement("span");
  const classes = [];
  if (state.bold) classes.push("b");
  if (state.dim) classes.push("d");
  if (state.italic) classes.push("i");
  if (state.underline) classes.push("u");
  if (state.fg && state.fg.index !== undefined) classes.push(`fg-${state.fg.index}`);
  if (state.bg && state.bg.index !== undefined) classes.push(`bg-${state.bg.index}`);
  if (state.fg && state.fg.rgb) span.style.color = `rgb(${state.fg.rgb.join(",")})`;
  if (state.bg && state.bg.rgb) span.style.backgroundColor = `rgb(${state.bg.rgb.join(",")})`;
  span.className = classes.join(" ");
  return span;
}

// Turns each stream's text into lines: colours kept, \r redraws collapsed onto one line.
class Terminal {
  constructor(root) {
    this.root = root;
    this.lines = 0;
    this.streams = {};
  }

  state(stream) {
    if (!this.streams[stream]) {
      this.streams[stream] = { line: null, span: null, key: "", cr: false, carry: "", sgr: { ...SGR_RESET } };
    }
    return this.streams[stream];
  }

  write(stream, text) {
    const st = this.state(stream);
    text = st.carry + text;
    st.carry = "";
    let run = "";
    const flush = () => { if (run) { this.put(stream, st, run); run = ""; } };
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      const code = text.charCodeAt(i);
      if (ch === "\x1b") {
        flush();
        const next = this.escape(st, text, i);
        if (next < 0) { st.carry = text.slice(i, i + 4096); break; }
        i = next;
      } else if (ch === "\n") {
        flush();
        st.cr = false;
        if (!st.line) this.newLine(stream, st);
        st.line = null;
        i++;
      } else if (ch === "\r") {
        flush();
        st.cr = true;
        i++;
      } else if ((code < 0x20 && ch !== "\t") || code === 0x7f || (code >= 0x80 && code < 0xa0)) {
        i++; // other control characters are dropped
      } else {
        if (st.cr) { flush(); this.clearLine(st); st.cr = false; }
        run += ch;
        i++;
      }
    }
    flush();
  }

  // Consumes one escape sequence at text[i]; the index after it, or -1 if it is incomplete.
  escape(st, text, i) {
    if (i + 1 >= text.length) return -1;
    const kind = text[i + 1];
    if (kind === "[") {
      for (let j = i + 2; j < text.length; j++) {
        const c = text.charCodeAt(j);
        if (c >= 0x40 && c <= 0x7e) {
          if (text[j] === "m") applySgr(st.sgr, text.slice(i + 2, j));
          return j + 1; // any other CSI (cursor moves, erase) is dropped
        }
        if (c < 0x20 || c > 0x3f) return j; // malformed: drop what came before
      }
      return -1;
    }
    if (kind === "]" || kind === "P" || kind === "_" || kind === "^") {
      for (let j = i + 2; j < text.length; j++) {
        if (text[j] === "\x07") return j + 1;
        if (text[j] === "\x1b" && text[j + 1] === "\\") return j + 2;
        if (text[j] === "\x1b" && j + 1 >= text.length) return -1;
      }
      return text.length - i > 4096 ? text.length : -1;
    }
    return i + 2; // a two-character escape: dropped
  }

  newLine(stream, st) {
    const atBottom = this.root.scrollHeight - this.root.scrollTop - this.root.clientHeight < 40;
    st.line = el("div", { class: `line ${stream}` });
    st.span = null;
    this.root.append(st.line);
    this.lines++;
    if (this.lines > MAX_LINES) {
      this.root.firstElementChild.remove();
      this.lines--;
    }
    if (atBottom) this.scrollSoon();
  }

  clearLine(st) {
    if (st.line) st.line.replaceChildren();
    st.span = null;
  }

  put(stream, st, run) {
    if (!st.line) this.newLine(stream, st);
    const key = styleKey(st.sgr);
    if (st.span && st.key === key) {
      st.span.firstChild.appendData(run);
    } else {
      st.span = styledSpan(st.sgr);
      st.span.append(document.createTextNode(run));
      st.key = key;
      st.line.append(st.span);
    }
  }

  scrollSoon() {
    if (this.scrolling) return;
    this.scrolling = true;
    requestAnimationFrame(() => { this.root.scrollTop = this.root.scrollHeight; this.scrolling = false; });
  }
}

// --- views ----------------------------------------------------------------------------------

let cleanup = () => {};

function route() {
  cleanup();
  cleanup = () => {};
  const root = document.getElementById("app");
  root.replaceChildren();
  const match = location.hash.match(/^#\/x\/([0-9a-z]{1,32})$/);
  if (match) showExecution(root, match[1]);
  else showList(root);
}

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
      location.hash = `#/x/${ex.id}`;
    } catch (err) {
      onError(err.message);
    }
  });
  return form;
}

function showList(root) {
  const error = el("div", { class: "error-box", hidden: true });
  const body = el("tbody");
  const more = el("button", { type: "button", text: "Older", hidden: true });
  const state = { limit: 50, timer: null, stopped: false };
  const fail = (message) => { error.textContent = message; error.hidden = false; };
  root.append(
    el("h2", { text: "Run a program" }), submitForm(fail), error,
    el("h2", { text: "Executions" }),
    el("table", { class: "executions" },
      el("thead", {}, el("tr", {}, ...["ID", "Status", "Progress", "Output", "Duration", "Program"]
        .map((h) => el("th", { text: h })))),
      body),
    more);
  more.addEventListener("click", () => { state.limit += 50; refresh(); });

  async function refresh() {
    clearTimeout(state.timer);
    try {
      const page = await call("GET", `/executions?limit=${state.limit}`);
      if (state.stopped) return;
      error.hidden = true;
      body.replaceChildren(...page.executions.map((ex) =>
        el("tr", { "data-id": ex.id },
          el("td", { class: "mono" }, el("a", { href: `#/x/${ex.id}`, text: ex.id })),
          el("td", {}, badge(ex.status)),
          el("td", {}, progressBar(ex)),
          el("td", { text: humanSize(ex.stdout_size + ex.stderr_size) }),
          el("td", { text: duration(ex) }),
          el("td", { class: "what mono", text: what(ex), title: what(ex) }))));
      more.hidden = page.next === null;
    } catch (err) {
      fail(`cannot list executions: ${err.message}`);
    }
    if (!state.stopped) state.timer = setTimeout(refresh, document.hidden ? 5000 : 1000);
  }
  refresh();
  cleanup = () => { state.stopped = true; clearTimeout(state.timer); };
}

function showExecution(root, id) {
  const header = el("div", { class: "head" });
  const progress = el("div", { class: "progress-line" });
  const error = el("div", { class: "error-box", hidden: true });
  const note = el("div", { class: "note", hidden: true });
  const log = el("pre", { class: "log", id: "log", tabindex: "0" });
  const term = new Terminal(log);
  const cancel = el("button", { type: "button", class: "danger", id: "cancel", text: "Cancel" });
  const toggles = ["stdout", "stderr"].map((stream) => {
    const box = el("input", { type: "checkbox", checked: true });
    box.addEventListener("change", () => log.classList.toggle(`hide-${stream}`, !box.checked));
    return el("label", {}, box, ` ${stream}`);
  });
  const downloads = ["all", "stdout", "stderr"].map((stream) =>
    el("a", { href: api(`/executions/${id}/raw?stream=${stream}`), download: "", class: `raw-${stream}`,
      text: stream === "all" ? "download raw" : stream }));
  root.append(
    el("p", {}, el("a", { href: "#/", text: "← all executions" })),
    header, progress,
    el("div", { class: "toolbar" }, cancel, ...toggles, el("span", { class: "muted", text: "|" }), ...downloads),
    error, note, log);
  const fail = (message) => { error.textContent = message; error.hidden = false; };
  let source = null;

  function render(ex) {
    const parts = [
      el("span", { class: "title mono", text: what(ex) }),
      badge(ex.status),
      el("span", { class: "muted mono", text: ex.id }),
      ex.exit_code !== null ? el("span", { text: `exit ${ex.exit_code}` }) : null,
      ex.signal !== null ? el("span", { text: `signal ${ex.signal}` }) : null,
      el("span", { class: "muted", text: duration(ex) }),
      ex.reason ? el("span", { class: "muted", text: ex.reason }) : null,
      ex.status === "queued" ? el("span", { class: "muted", text: "waiting for a worker (outspool worker)" }) : null];
    header.replaceChildren(...parts.filter((part) => part !== null));
    progress.replaceChildren(progressBar(ex));
    cancel.disabled = FINISHED.has(ex.status) || ex.cancel_requested;
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { render(await call("POST", `/executions/${id}/cancel`)); } catch (err) { fail(err.message); }
  });

  async function start() {
    let ex;
    try { ex = await call("GET", `/executions/${id}`); } catch (err) { fail(err.message); return; }
    render(ex);
    let offset = 0;
    const total = ex.stdout_size + ex.stderr_size;
    if (total > START_WINDOW) {
      const last = await call("GET", `/executions/${ex.id}/tail?lines=${MAX_LINES}`);
      offset = Math.max(last.offset, total - START_WINDOW);
      note.textContent = `Showing the output from byte ${offset} on; download raw for all of it.`;
      note.hidden = false;
    }
    source = new EventSource(api(`/executions/${ex.id}/events?offset=${offset}`));
    source.addEventListener("output", (e) => { const d = JSON.parse(e.data); term.write(d.stream, d.text); });
    const onRecord = (e) => {
      const record = JSON.parse(e.data);
      render(record);
      if (FINISHED.has(record.status)) source.close();
    };
    source.addEventListener("status", onRecord);
    source.addEventListener("progress", onRecord);
    source.addEventListener("problem", (e) => { fail(JSON.parse(e.data).error); source.close(); });
    source.addEventListener("open", () => { error.hidden = true; });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) fail("connection lost; reconnecting…");
    });
  }
  start();
  cleanup = () => { if (source) source.close(); };
}

window.addEventListener("hashchange", route);
route();
