// Terminal text to styled runs, one line at a time. No HTML is produced: callers put each
// run's text into the page with textContent, so program output never becomes markup.
//
// A line is laid out on cells like a terminal row: "\r" returns to column 0 and what follows
// overwrites, "\b" steps back, ESC[K / ESC[1K / ESC[2K erase, ESC[nG / ESC[nC / ESC[nD move the
// cursor. SGR (ESC[...m) sets bold, dim, italic, underline, blink (ignored), inverse, hidden,
// strikethrough, overline and 16 / 256 / RGB colours. Every other escape sequence (OSC titles
// and hyperlinks, DCS, charset selection, cursor movement across lines) is dropped, and so are
// control characters other than tab.
"use strict";

/** The style in force at the start of a line; states are never mutated, only replaced. */
export const PLAIN = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
  inverse: false, hidden: false, strike: false, overline: false,
});

const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/; // anything but tab that needs the full parser
const SGR_ONLY = /\x1b\[[0-9;:]*m/g;
const TAB = 8;

function colour256(n) {
  if (n < 16) return { index: n };
  if (n < 232) {
    const c = n - 16, level = (v) => (v === 0 ? 0 : 55 + v * 40);
    return { rgb: [level(Math.floor(c / 36)), level(Math.floor(c / 6) % 6), level(c % 6)] };
  }
  const grey = 8 + (n - 232) * 10;
  return { rgb: [grey, grey, grey] };
}

// An extended colour (38/48/58) from its parameters: "5;n", "2;r;g;b" or the colon forms
// "5:n", "2:r:g:b", "2::r:g:b". Returns [colour or null, groups consumed after the first].
function extended(groups, i) {
  const sub = groups[i];
  if (sub.length > 1) { // colon form, all in one group
    if (sub[1] === 5) return [colour256(sub[2] & 255), 0];
    if (sub[1] === 2) {
      const rgb = sub.length >= 6 ? sub.slice(3, 6) : sub.slice(2, 5);
      return [{ rgb: rgb.map((v) => v & 255) }, 0];
    }
    return [null, 0];
  }
  const kind = groups[i + 1]?.[0];
  if (kind === 5 && i + 2 < groups.length) return [colour256(groups[i + 2][0] & 255), 2];
  if (kind === 2 && i + 4 < groups.length) {
    return [{ rgb: [2, 3, 4].map((k) => groups[i + k][0] & 255) }, 4];
  }
  return [null, 1];
}

const SIMPLE = {
  1: { bold: true }, 2: { dim: true }, 3: { italic: true }, 4: { underline: true },
  7: { inverse: true }, 8: { hidden: true }, 9: { strike: true }, 21: { underline: true },
  22: { bold: false, dim: false }, 23: { italic: false }, 24: { underline: false },
  27: { inverse: false }, 28: { hidden: false }, 29: { strike: false }, 53: { overline: true },
  55: { overline: false }, 39: { fg: null }, 49: { bg: null },
};

function sgrCode(next, groups, i) {
  const code = groups[i][0];
  if (code === 0) { Object.assign(next, PLAIN); return 0; }
  if (code === 4 && groups[i].length > 1) { next.underline = groups[i][1] !== 0; return 0; }
  if (SIMPLE[code]) { Object.assign(next, SIMPLE[code]); return 0; }
  if (code >= 30 && code <= 37) next.fg = { index: code - 30 };
  else if (code >= 90 && code <= 97) next.fg = { index: code - 90 + 8 };
  else if (code >= 40 && code <= 47) next.bg = { index: code - 40 };
  else if (code >= 100 && code <= 107) next.bg = { index: code - 100 + 8 };
  else if (code === 38 || code === 48 || code === 58) {
    const [colour, used] = extended(groups, i);
    if (code === 38) next.fg = colour;
    else if (code === 48) next.bg = colour;
    return used; // 58 (underline colour) is parsed and not shown
  }
  return 0;
}

/** The state after applying the parameters of one SGR sequence to `state`. */
export function applySgr(state, params) {
  const groups = (params === "" ? "0" : params).split(";")
    .map((g) => g.split(":").map((p) => (p === "" ? 0 : Number(p) || 0)));
  const next = { ...state };
  for (let i = 0; i < groups.length; i++) i += sgrCode(next, groups, i);
  return Object.freeze(next);
}

/** The style in force after a whole line (only its SGR sequences matter). */
export function advance(state, raw) {
  if (raw.indexOf("\x1b") < 0) return state;
  for (const m of raw.matchAll(/\x1b\[([0-9;:]*)m/g)) state = applySgr(state, m[1]);
  return state;
}

// The end of a string-type escape (OSC, DCS, APC, PM) starting at i, or -1 if it has not ended.
function stringEnd(raw, i) {
  for (let j = i + 2; j < raw.length; j++) {
    if (raw[j] === "\x07") return j + 1;
    if (raw[j] === "\x1b" && raw[j + 1] === "\\") return j + 2;
  }
  return -1;
}

// Parses the CSI at raw[i]: [end index or -1, params, final character].
function csi(raw, i) {
  for (let j = i + 2; j < raw.length; j++) {
    const c = raw.charCodeAt(j);
    if (c >= 0x40 && c <= 0x7e) return [j + 1, raw.slice(i + 2, j), raw[j]];
    if (c < 0x20 || c > 0x3f) return [j, "", ""]; // malformed: dropped
  }
  return [-1, "", ""];
}

/** A terminal row: characters and the style of each, with a cursor. */
class Row {
  constructor(state) {
    this.chars = [];
    this.styles = [];
    this.col = 0;
    this.state = state;
  }

  put(ch) {
    while (this.chars.length < this.col) { this.chars.push(" "); this.styles.push(PLAIN); }
    this.chars[this.col] = ch;
    this.styles[this.col] = this.state;
    this.col++;
  }

  erase(mode) {
    if (mode === 2) { this.chars.length = 0; this.styles.length = 0; return; }
    if (mode === 1) {
      for (let c = 0; c <= this.col && c < this.chars.length; c++) {
        this.chars[c] = " "; this.styles[c] = PLAIN;
      }
      return;
    }
    this.chars.length = Math.min(this.chars.length, this.col);
    this.styles.length = this.chars.length;
  }

  control(params, final) {
    const n = Number(params.split(";")[0]) || 0;
    if (final === "m") this.state = applySgr(this.state, params);
    else if (final === "K") this.erase(n);
    else if (final === "G") this.col = Math.max(0, n - 1);
    else if (final === "C") this.col += Math.max(1, n);
    else if (final === "D") this.col = Math.max(0, this.col - Math.max(1, n));
  }

  runs() {
    const out = [];
    for (let c = 0; c < this.chars.length; c++) {
      const last = out[out.length - 1];
      if (last && last.style === this.styles[c]) last.text += this.chars[c];
      else out.push({ text: this.chars[c], style: this.styles[c] });
    }
    return out;
  }
}

// Consumes the escape sequence at raw[i] into `row`; the index after it, or raw.length if it
// is incomplete (the rest of the line has not arrived yet, or never will: dropped either way).
function escape(row, raw, i) {
  const kind = raw[i + 1];
  if (kind === undefined) return raw.length;
  if (kind === "[") {
    const [end, params, final] = csi(raw, i);
    if (end < 0) return raw.length;
    if (final) row.control(params, final);
    return end;
  }
  if (kind === "]" || kind === "P" || kind === "_" || kind === "^" || kind === "X") {
    const end = stringEnd(raw, i);
    return end < 0 ? raw.length : end;
  }
  if ("()*+#%".includes(kind)) return Math.min(raw.length, i + 3);
  return i + 2;
}

function layout(raw, state) {
  const row = new Row(state);
  for (let i = 0; i < raw.length;) {
    const ch = raw[i];
    const code = raw.charCodeAt(i);
    if (ch === "\x1b") { i = escape(row, raw, i); continue; }
    if (ch === "\r") row.col = 0;
    else if (ch === "\b") row.col = Math.max(0, row.col - 1);
    else if (ch === "\t") { do row.put(" "); while (row.col % TAB); }
    else if (!(code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0))) row.put(ch);
    i++;
  }
  return row;
}

/** The line as styled runs `{text, style}`, given the style in force at its start. */
export function runs(raw, state) {
  if (!CONTROL.test(raw)) return raw ? [{ text: raw, style: state }] : [];
  return layout(raw, state).runs();
}

/** The line's visible text (what a reader sees, and what search looks at). */
export function plain(raw) {
  if (!CONTROL.test(raw)) return raw;
  const stripped = raw.replace(SGR_ONLY, "");
  if (!CONTROL.test(stripped)) return stripped;
  return layout(raw, PLAIN).chars.join("");
}

/** Class names and inline colours for a style (colours by index use the theme's palette). */
export function styleOf(style) {
  const classes = [];
  if (style.bold) classes.push("b");
  if (style.dim) classes.push("d");
  if (style.italic) classes.push("i");
  if (style.hidden) classes.push("h");
  const lines = [style.underline && "underline", style.strike && "line-through",
    style.overline && "overline"].filter(Boolean);
  let fg = style.fg, bg = style.bg;
  if (style.inverse) {
    [fg, bg] = [bg, fg];
    if (!fg) classes.push("fg-inv");
    if (!bg) classes.push("bg-inv");
  }
  const inline = {};
  if (fg?.index !== undefined) classes.push(`fg-${fg.index}`);
  else if (fg?.rgb) inline.color = `rgb(${fg.rgb.join(",")})`;
  if (bg?.index !== undefined) classes.push(`bg-${bg.index}`);
  else if (bg?.rgb) inline.backgroundColor = `rgb(${bg.rgb.join(",")})`;
  if (lines.length) inline.textDecorationLine = lines.join(" ");
  return { className: classes.join(" "), inline };
}
