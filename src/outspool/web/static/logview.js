// The log view: holds an execution's output as lines and shows only those on screen.
//
// Output arrives as pieces tagged with their stream ({stream, offset, text} or {..., data}
// in base64, see docs/web.md). A line starts at a stream's first byte and after each of its
// newlines, so stdout and stderr lines interleave but never mix; the server counts lines the
// same way (`/pieces?lines=true`), which lets the page start near the end and number lines.
// Rows have one fixed height: the view reads the layout once per frame, never per line.
"use strict";

import { PLAIN, advance, plain, runs, styleOf } from "./ansi.js";

export const LINE_HEIGHT = 18; // px; the same in style.css (.log .line)
const MAX_PX = 8_000_000; // taller scroll areas are scaled down (browsers cap element heights)
const OVERSCAN = 4; // rows drawn beyond the screen
const SCAN_BUDGET = 200_000; // lines searched per frame
const TIME_BLOCK = 256; // lines whose times are fetched together
const STREAMS = ["stdout", "stderr"];
const NON_ASCII = /[^\x00-\x7f]/;

function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length) { n += 4; i++; }
    else n += 3;
  }
  return n;
}

function base64Bytes(data) {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Consecutive lines [base, base + length) of the log, read in order. */
export class Region {
  constructor(base) {
    this.base = base;
    this.raw = [];
    this.stream = []; // 0 stdout, 1 stderr
    this.state = []; // the style in force at the line's start
    this.offset = []; // the line's first byte in the merged stream
    this.open = [-1, -1]; // per stream, the index of its line still waiting for a newline
    this.sgr = [PLAIN, PLAIN];
    this.decoders = [new TextDecoder(), new TextDecoder()];
    this.matches = []; // absolute line numbers (0-based) matching the search, in order
    this.scanned = 0; // lines searched so far for the current query
  }

  get length() { return this.raw.length; }
  get end() { return this.base + this.raw.length; }

  add(piece) {
    const s = piece.stream === "stderr" ? 1 : 0;
    if (piece.dropped !== undefined) this.addGap(s, piece.dropped, piece.offset);
    else if (piece.text !== undefined) this.addText(s, piece.text, piece.offset);
    else this.addBytes(s, base64Bytes(piece.data), piece.offset);
  }

  /** Bytes not kept (an output limit): the stream's open line ends; one marker line. */
  addGap(s, dropped, offset) {
    if (this.open[s] >= 0) this.segment(s, "", offset, true);
    this.segment(s, `[outspool: ${dropped.toLocaleString("en-US")} bytes dropped]`, offset, true);
  }

  addText(s, text, offset) {
    const ascii = !NON_ASCII.test(text);
    let pos = 0, at = offset;
    for (;;) {
      const nl = text.indexOf("\n", pos);
      const segment = text.slice(pos, nl < 0 ? text.length : nl);
      this.segment(s, segment, at, nl >= 0);
      if (nl < 0) return;
      at += (ascii ? segment.length : utf8Length(segment)) + 1;
      pos = nl + 1;
    }
  }

  addBytes(s, bytes, offset) {
    let pos = 0;
    for (;;) {
      const nl = bytes.indexOf(10, pos);
      const end = nl < 0 ? bytes.length : nl;
      const segment = this.decoders[s].decode(bytes.subarray(pos, end), { stream: nl < 0 });
      this.segment(s, segment, offset + pos, nl >= 0);
      if (nl < 0) return;
      pos = nl + 1;
    }
  }

  segment(s, text, offset, ends) {
    let i = this.open[s];
    if (i < 0) {
      if (!text && !ends) return;
      i = this.raw.length;
      this.raw.push(text);
      this.stream.push(s);
      this.state.push(this.sgr[s]);
      this.offset.push(offset);
    } else if (text) {
      this.raw[i] += text;
    }
    if (ends) {
      this.sgr[s] = advance(this.state[i], this.raw[i]);
      this.open[s] = -1;
    } else {
      this.open[s] = i;
    }
  }

  /** Searches lines from where the last scan stopped (lines still growing are searched again
   * next time); true when it reached the last line loaded. */
  scan(query, budget) {
    const until = Math.min(this.length, this.scanned + budget);
    for (let i = this.scanned; i < until; i++) {
      if (plain(this.raw[i]).toLowerCase().includes(query)) this.matches.push(this.base + i);
    }
    this.scanned = until;
    const growing = Math.min(...this.open.filter((i) => i >= 0 && i < until));
    if (growing < until) {
      while (this.matches.length && this.matches[this.matches.length - 1] >= this.base + growing) {
        this.matches.pop();
      }
      this.scanned = growing;
    }
    return until === this.length;
  }
}

/**
 * The view over one scrolling element. `tail` holds the lines from where the page started
 * reading to the live end; `head`, loaded later in the background, the lines before it.
 * Lines not loaded yet show as placeholders with their numbers.
 */
export class LogView {
  constructor(root, { fetchTimes, onFollow }) {
    this.root = root;
    this.sizer = document.createElement("div");
    this.sizer.className = "log-size";
    this.rows = document.createElement("div");
    this.rows.className = "log-rows";
    root.replaceChildren(this.sizer, this.rows);
    this.head = null;
    this.tail = new Region(0);
    this.hidden = [false, false];
    this.index = null; // shown line numbers when a stream is hidden
    this.follow = true;
    this.onFollow = onFollow;
    this.query = "";
    this.current = -1; // the line of the current search match
    this.target = -1; // the line linked to (#L...)
    this.fetchTimes = fetchTimes;
    this.showTimes = false;
    this.times = new Map(); // line offset -> RFC 3339 time
    this.timeBlocks = new Set();
    this.frame = 0;
    this.grown = false; // lines were added since the last frame
    this.drawn = new Map(); // line -> {key, node} of the rows on screen
    root.addEventListener("scroll", () => this.scrolled(), { passive: true });
    new ResizeObserver(() => this.update()).observe(root);
  }

  get total() { return this.tail.end; }

  // --- lines -----------------------------------------------------------------------------

  startAt(base) { this.tail = new Region(base); this.changed(); }

  add(piece) { this.tail.add(piece); this.changed(); }

  addHead(region) { this.head = region; this.changed(); }

  /** Lines were added (to either region): draw them in the next frame. */
  changed() { this.grown = true; this.update(); }

  line(n) {
    for (const region of [this.tail, this.head]) {
      if (region && n >= region.base && n < region.end) {
        const i = n - region.base;
        return { raw: region.raw[i], stream: region.stream[i], state: region.state[i],
          offset: region.offset[i] };
      }
    }
    return null;
  }

  setHidden(stream, hidden) {
    this.hidden[STREAMS.indexOf(stream)] = hidden;
    this.changed();
  }

  rebuildIndex() {
    if (!this.hidden[0] && !this.hidden[1]) { this.index = null; return; }
    const shown = [];
    for (const region of [this.head, this.tail]) {
      if (!region) continue;
      for (let i = 0; i < region.length; i++) {
        if (!this.hidden[region.stream[i]]) shown.push(region.base + i);
      }
    }
    this.index = shown;
  }

  rowCount() { return this.index ? this.index.length : this.total; }
  lineAt(row) { return this.index ? this.index[row] : row; }

  rowOf(n) {
    if (!this.index) return n;
    let lo = 0, hi = this.index.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.index[mid] < n) lo = mid + 1; else hi = mid; }
    return lo;
  }

  // --- scrolling -------------------------------------------------------------------------

  update() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  geometry() {
    const count = this.rowCount();
    const full = count * LINE_HEIGHT;
    const height = Math.min(full, MAX_PX);
    const view = this.root.clientHeight;
    return { count, height, view, maxScroll: Math.max(0, height - view),
      maxVirtual: Math.max(0, full - view) };
  }

  scrolled() {
    const { maxScroll } = this.geometry();
    const follow = this.root.scrollTop >= maxScroll - LINE_HEIGHT;
    if (follow !== this.follow) { this.follow = follow; this.onFollow(follow); }
    this.update();
  }

  resume() {
    this.follow = true;
    this.onFollow(true);
    this.update();
  }

  /** Scrolls so that line `n` (0-based) is in the middle of the screen; stops following. */
  reveal(n) {
    if (this.follow) { this.follow = false; this.onFollow(false); }
    const g = this.geometry();
    this.sizer.style.height = `${g.height}px`;
    const virtual = Math.min(g.maxVirtual, Math.max(0, this.rowOf(n) * LINE_HEIGHT - g.view / 2));
    this.root.scrollTop = g.maxVirtual ? (virtual / g.maxVirtual) * g.maxScroll : 0;
    this.update();
  }

  draw() {
    this.frame = 0;
    if (this.grown) this.rebuildIndex();
    this.grown = false;
    this.search();
    const g = this.geometry();
    if (this.sizer.style.height !== `${g.height}px`) this.sizer.style.height = `${g.height}px`;
    if (this.follow) this.root.scrollTop = g.maxScroll;
    const top = this.root.scrollTop;
    const virtual = g.maxScroll ? (top / g.maxScroll) * g.maxVirtual : 0;
    const first = Math.floor(virtual / LINE_HEIGHT);
    const last = Math.min(g.count, first + Math.ceil(g.view / LINE_HEIGHT) + OVERSCAN);
    const offsetTop = top - (virtual - first * LINE_HEIGHT);
    this.rows.style.top = `${offsetTop}px`;
    this.rows.style.height = `${Math.max(0, Math.min((last - first) * LINE_HEIGHT, g.height - offsetTop))}px`;
    this.drawRows(first, last);
  }

  drawRows(first, last) {
    const digits = `${String(this.total).length}ch`;
    if (digits !== this.digits) { this.digits = digits; this.root.style.setProperty("--digits", digits); }
    const rows = [];
    const drawn = new Map();
    for (let r = first; r < last; r++) {
      const n = this.lineAt(r);
      rows.push(this.row(n, drawn));
    }
    this.drawn = drawn; // rows whose line did not change are kept as they are
    const same = rows.length === this.rows.children.length
      && rows.every((row, i) => row === this.rows.children[i]);
    if (!same) this.rows.replaceChildren(...rows);
    if (this.showTimes) this.wantTimes(this.lineAt(first), this.lineAt(Math.max(first, last - 1)));
  }

  // --- rows ------------------------------------------------------------------------------

  // The row of line n: the one drawn last time if nothing it shows has changed since.
  row(n, drawn) {
    const line = this.line(n);
    const key = line ? [line.raw.length, n === this.target, n === this.current, this.query,
      this.showTimes && (this.times.get(line.offset) || "")].join("|") : "pending";
    const last = this.drawn.get(n);
    const node = last && last.key === key ? last.node : this.build(n, line);
    drawn.set(n, { key, node });
    return node;
  }

  build(n, line) {
    const div = document.createElement("div");
    const number = document.createElement("a");
    number.className = "ln";
    number.href = `#L${n + 1}`;
    number.textContent = String(n + 1);
    div.dataset.line = String(n + 1);
    div.append(number);
    if (!line) {
      div.className = "line pending";
      div.append(Object.assign(document.createElement("span"), { className: "tx", textContent: "…" }));
      return div;
    }
    div.className = `line ${STREAMS[line.stream]}${n === this.target ? " target" : ""}`;
    if (this.showTimes) {
      const time = this.times.get(line.offset) || "";
      div.append(Object.assign(document.createElement("span"),
        { className: "ts", textContent: time.slice(11, 23), title: time }));
    }
    const text = document.createElement("span");
    text.className = "tx";
    for (const node of this.spans(runs(line.raw, line.state), n === this.current)) text.append(node);
    div.append(text);
    return div;
  }

  // Styled spans for the runs of a line, with search matches wrapped in <mark>.
  spans(parts, current) {
    const marks = this.query ? this.matchRanges(parts.map((p) => p.text).join("")) : [];
    const out = [];
    let pos = 0, m = 0;
    for (const part of parts) {
      const { className, inline } = styleOf(part.style);
      for (let start = 0; start < part.text.length;) {
        const at = pos + start;
        while (m < marks.length && marks[m][1] <= at) m++;
        const marked = m < marks.length && marks[m][0] <= at;
        const stop = marked ? marks[m][1] : (m < marks.length ? marks[m][0] : Infinity);
        const end = Math.min(part.text.length, stop - pos);
        const span = document.createElement("span");
        if (className) span.className = className;
        Object.assign(span.style, inline);
        span.textContent = part.text.slice(start, end);
        if (marked) {
          const mark = document.createElement("mark");
          if (current) mark.className = "current";
          mark.append(span);
          out.push(mark);
        } else {
          out.push(span);
        }
        start = end;
      }
      pos += part.text.length;
    }
    return out;
  }

  matchRanges(text) {
    const lower = text.toLowerCase();
    const found = [];
    const size = this.query.length;
    for (let at = lower.indexOf(this.query); at >= 0; at = lower.indexOf(this.query, at + size)) {
      found.push([at, at + size]);
    }
    return found;
  }

  // --- search ----------------------------------------------------------------------------

  setQuery(query) {
    this.query = query.toLowerCase();
    this.current = -1;
    for (const region of [this.head, this.tail]) {
      if (region) { region.matches = []; region.scanned = 0; }
    }
    this.update();
  }

  /** Searches what was loaded since the last search, a slice per frame (all of it if
   * `budget` is Infinity). */
  search(budget = SCAN_BUDGET) {
    if (!this.query) return;
    let done = true;
    for (const region of [this.head, this.tail]) {
      if (region && !region.scan(this.query, budget)) done = false;
    }
    if (!done) this.update();
  }

  matches() {
    return [...(this.head ? this.head.matches : []), ...this.tail.matches]
      .filter((n) => !this.hidden[this.line(n).stream]);
  }

  /** Moves to the next (+1) or previous (-1) match; returns [position, count]. */
  step(direction) {
    this.search(Infinity);
    const all = this.matches();
    if (!all.length) return [0, 0];
    let i;
    if (direction > 0) i = all.findIndex((n) => n > this.current);
    else i = all.findLastIndex((n) => n < this.current);
    if (i < 0) i = direction > 0 ? 0 : all.length - 1;
    this.current = all[i];
    this.reveal(this.current);
    return [i + 1, all.length];
  }

  position() {
    const all = this.matches();
    return [all.indexOf(this.current) + 1, all.length];
  }

  // --- line links and times --------------------------------------------------------------

  highlight(n) {
    this.target = n;
    this.reveal(n);
  }

  setShowTimes(show) {
    this.showTimes = show;
    this.root.classList.toggle("with-times", show);
    this.update();
  }

  wantTimes(firstLine, lastLine) {
    for (let b = Math.floor(firstLine / TIME_BLOCK); b <= Math.floor(lastLine / TIME_BLOCK); b++) {
      if (this.timeBlocks.has(b)) continue;
      const start = this.line(b * TIME_BLOCK);
      if (!start) continue;
      const next = this.line((b + 1) * TIME_BLOCK);
      this.timeBlocks.add(b);
      const forget = () => this.timeBlocks.delete(b);
      this.fetchTimes(start.offset, next ? next.offset : null).then((pairs) => {
        for (const [offset, time] of pairs) this.times.set(offset, time);
        if (!next) setTimeout(forget, 1000); // the block is still growing: ask again later
        this.update();
      }, forget);
    }
  }
}
