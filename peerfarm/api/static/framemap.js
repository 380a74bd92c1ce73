// peerfarm dashboard: the frame map of one job (one cell per frame on a canvas).
//
// Owns drawing a job's frames and picking one. Rules: the map is drawn from the compact
// GET /api/jobs/{ref}/frame-states answer (the job's runs and one character per frame:
// p pending, r rendering, d done, f failed; the page adds s, stopped, for a cancelled job's last
// claims), never from one object per frame; an update paints only the cells whose state changed,
// and the whole map is painted only for a new job, a zoom or a new width. Cells are square; from
// LABEL_SIZE on they carry their frame number. A cell is picked by a click, or from the keyboard
// (the canvas takes focus: arrows, Home/End, PageUp/PageDown move the cursor, Enter opens it),
// or by typing a frame number; hovering shows the frame and its state.
"use strict";

(() => {
  const SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 30, 36]; // cell sizes in CSS pixels (zoom levels)
  const LABEL_SIZE = 30; // cells this big show their frame number
  const FIT_HEIGHT = 420; // the first zoom of a job is the biggest whose map fits this high
  const FIT_MIN = 2; // ...but no smaller than this (a 1-pixel cell is hard to point at)
  const NAMES = { p: "pending", r: "rendering", d: "done", f: "failed", s: "stopped" };
  const CODES = Object.fromEntries(Object.entries(NAMES).map(([code, name]) => [name, code]));

  class FrameMap {
    /** `root`: an empty element to fill; `onPick(frame)` runs when a frame is chosen;
     *  `details(frame)` (optional) resolves to a line more about a frame hovered a moment. */
    constructor(root, onPick, details = null) {
      this.root = root;
      this.onPick = onPick;
      this.details = details;
      this.hovered = null; // the position under the pointer
      this.hoverTimer = null;
      this.job = null;
      this.stopped = false; // the job was cancelled: its claims show as stopped
      this.states = ""; // one character per frame, in rendering order
      this.runs = []; // [[first, last, step], ...] with `starts` (position of each run)
      this.starts = [];
      this.size = SIZES[SIZES.length - 1];
      this.cols = 1;
      this.selected = null; // a position
      this.cursor = 0; // the keyboard's position
      this.paints = []; // full paints: {count, ms, at} (at: ms since the page's time origin)
      this.colours = {};
      this.build();
    }

    build() {
      const button = (label, title, onclick) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "btn small";
        b.textContent = label;
        b.title = title;
        b.setAttribute("aria-label", title);
        b.addEventListener("click", onclick);
        return b;
      };
      const bar = document.createElement("div");
      bar.className = "map-bar";
      this.zoomOut = button("−", "zoom out", () => this.zoom(-1));
      this.zoomIn = button("+", "zoom in", () => this.zoom(1));
      const form = document.createElement("form");
      form.className = "map-goto";
      this.input = document.createElement("input");
      this.input.type = "number";
      this.input.id = "frame-goto";
      this.input.placeholder = "frame";
      this.input.setAttribute("aria-label", "open frame number");
      form.append(this.input, button("Open", "open this frame", () => form.requestSubmit()));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const at = this.positionOf(Number(this.input.value));
        if (this.input.value !== "" && at !== null) this.pick(at);
        else this.announce(`no frame ${this.input.value} in this job`);
      });
      this.info = document.createElement("span");
      this.info.className = "map-info";
      bar.append(this.zoomOut, this.zoomIn, form, this.info);
      this.box = document.createElement("div");
      this.box.className = "map-box";
      this.canvas = document.createElement("canvas");
      this.canvas.tabIndex = 0;
      this.canvas.setAttribute("role", "img");
      this.tip = document.createElement("div");
      this.tip.className = "map-tip hidden";
      this.live = document.createElement("div");
      this.live.className = "sr-only";
      this.live.setAttribute("aria-live", "polite");
      this.box.append(this.canvas, this.tip);
      this.root.append(bar, this.box, this.live);
      this.context = this.canvas.getContext("2d", { alpha: false });
      this.canvas.addEventListener("mousemove", (e) => this.hover(e));
      this.canvas.addEventListener("mouseleave", () => {
        this.hovered = null;
        this.tip.classList.add("hidden");
      });
      this.canvas.addEventListener("click", (e) => {
        const at = this.at(e);
        if (at !== null) this.pick(at);
      });
      this.canvas.addEventListener("keydown", (e) => this.key(e));
      this.canvas.addEventListener("focus", () => this.paintCell(this.cursor));
      this.canvas.addEventListener("blur", () => this.paintCell(this.cursor));
      this.box.addEventListener("wheel", (e) => {
        if (!e.ctrlKey) return;
        e.preventDefault();
        this.zoom(e.deltaY < 0 ? 1 : -1);
      }, { passive: false });
      this.width = 0; // the box's width at the last layout
      new ResizeObserver(() => {
        if (this.states && this.box.clientWidth !== this.width) this.layout();
      }).observe(this.box);
    }

    // --- positions and frames --------------------------------------------------------------

    setRuns(runs) {
      this.runs = runs;
      this.starts = [];
      let at = 0;
      for (const [first, last, step] of runs) {
        this.starts.push(at);
        at += Math.floor((last - first) / step) + 1;
      }
    }

    frameAt(position) {
      let lo = 0;
      let hi = this.starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (this.starts[mid] <= position) lo = mid;
        else hi = mid - 1;
      }
      const [first, , step] = this.runs[lo];
      return first + (position - this.starts[lo]) * step;
    }

    positionOf(frame) {
      for (let i = 0; i < this.runs.length; i += 1) {
        const [first, last, step] = this.runs[i];
        if (frame >= first && frame <= last && (frame - first) % step === 0) {
          return this.starts[i] + (frame - first) / step;
        }
      }
      return null;
    }

    stateOf(frame) {
      const at = this.positionOf(frame);
      return at === null ? null : NAMES[this.states[at]];
    }

    count(state) {
      const code = CODES[state] || state;
      let n = 0;
      for (let i = this.states.indexOf(code); i >= 0; i = this.states.indexOf(code, i + 1)) n += 1;
      return n;
    }

    // --- updating ----------------------------------------------------------------------------

    /** Show `data` (a frame-states answer) of `job`; `stopped`: the job was cancelled. An
     *  answer with `positions` carries only the frames changed since the map's last one. */
    update(job, data, stopped) {
      if (data.positions && this.accepts(job, stopped)) {
        this.apply(data.positions, stopped ? data.states.replaceAll("r", "s") : data.states);
        return;
      }
      this.stopped = stopped;
      const states = stopped ? data.states.replaceAll("r", "s") : data.states;
      const fresh = job !== this.job || states.length !== this.states.length;
      const old = this.states;
      this.states = states;
      if (fresh) {
        this.job = job;
        this.setRuns(data.runs);
        this.selected = null;
        this.cursor = 0;
        this.size = this.fitSize(states.length);
        this.layout();
      } else {
        const start = performance.now();
        let changed = 0;
        for (let i = 0; i < states.length; i += 1) {
          if (states.charCodeAt(i) !== old.charCodeAt(i)) {
            this.paintCell(i);
            changed += 1;
          }
        }
        this.lastUpdate = { changed, ms: performance.now() - start };
      }
      this.describe();
    }

    /** Whether an answer of changes only fits what the map shows. */
    accepts(job, stopped) {
      return job === this.job && stopped === this.stopped;
    }

    /** The frames at `positions` are now in the states `codes` (one character each). */
    apply(positions, codes) {
      const start = performance.now();
      if (positions.length) {
        const cells = this.states.split("");
        positions.forEach((at, k) => { cells[at] = codes[k]; });
        this.states = cells.join("");
        positions.forEach((at) => this.paintCell(at));
        this.describe();
      }
      this.lastUpdate = { changed: positions.length, ms: performance.now() - start };
    }

    select(frame) {
      const before = this.selected;
      this.selected = frame === null ? null : this.positionOf(frame);
      if (before !== null) this.paintCell(before);
      if (this.selected !== null) {
        this.cursor = this.selected;
        this.paintCell(this.selected);
      }
    }

    pick(position) {
      this.cursor = position;
      this.select(this.frameAt(position));
      this.onPick(this.frameAt(position));
    }

    zoom(direction) {
      const index = SIZES.indexOf(this.size) + direction;
      if (index < 0 || index >= SIZES.length) return;
      this.size = SIZES[index];
      this.layout();
      this.scrollTo(this.selected !== null ? this.selected : this.cursor);
    }

    fitSize(count) {
      const width = Math.max(1, this.box.clientWidth);
      for (let i = SIZES.length - 1; SIZES[i] > FIT_MIN; i -= 1) {
        const { pitch } = this.metrics(SIZES[i]);
        const cols = Math.max(1, Math.floor((width + pitch - SIZES[i]) / pitch));
        if (Math.ceil(count / cols) * pitch <= FIT_HEIGHT) return SIZES[i];
      }
      return FIT_MIN;
    }

    metrics(size) {
      const gap = size >= 8 ? 3 : size >= 4 ? 1 : 0;
      return { gap, pitch: size + gap };
    }

    // --- drawing -----------------------------------------------------------------------------

    layout() {
      const start = performance.now();
      const { pitch, gap } = this.metrics(this.size);
      this.width = this.box.clientWidth;
      this.pitch = pitch;
      this.gap = gap;
      this.cols = Math.max(1, Math.floor((Math.max(1, this.width) + gap) / pitch));
      const rows = Math.max(1, Math.ceil(this.states.length / this.cols));
      this.ratio = window.devicePixelRatio || 1;
      const cssWidth = this.cols * pitch - gap;
      const cssHeight = rows * pitch - gap;
      this.canvas.style.width = `${cssWidth}px`;
      this.canvas.style.height = `${cssHeight}px`;
      this.canvas.width = Math.round(cssWidth * this.ratio);
      this.canvas.height = Math.round(cssHeight * this.ratio);
      this.readColours();
      this.paintAll();
      this.zoomIn.disabled = this.size === SIZES[SIZES.length - 1];
      this.zoomOut.disabled = this.size === SIZES[0];
      this.root.dataset.size = this.size;
      this.paints.push({ count: this.states.length, ms: performance.now() - start,
        at: performance.now() });
      this.root.dataset.paints = this.paints.length;
    }

    /** The CSS colours of the states, as text (fillRect) and as RGBA words (ImageData). */
    readColours() {
      const style = getComputedStyle(this.root);
      const probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
      const word = (colour) => {
        probe.clearRect(0, 0, 1, 1);
        probe.fillStyle = colour;
        probe.fillRect(0, 0, 1, 1);
        return new Uint32Array(probe.getImageData(0, 0, 1, 1).data.buffer)[0];
      };
      this.words = {};
      for (const [code, name] of Object.entries(NAMES)) {
        this.colours[code] = style.getPropertyValue(`--${name}`).trim() || "#999";
        this.words[code] = word(this.colours[code]);
      }
      this.colours.background = style.getPropertyValue("--card").trim() || "#fff";
      this.colours.ink = style.getPropertyValue("--ink").trim() || "#000";
      this.words.background = word(this.colours.background);
    }

    /** A cell's square on the canvas, in device pixels. */
    cell(i) {
      const { pitch, cols, ratio } = this;
      return {
        x: Math.round((i % cols) * pitch * ratio),
        y: Math.round(Math.floor(i / cols) * pitch * ratio),
        side: Math.max(1, Math.round(this.size * ratio)),
      };
    }

    /** Every cell at once, written as pixels (a fillRect per cell is ~30x slower). */
    paintAll() {
      const { width, height } = this.canvas;
      const image = this.context.createImageData(width, height);
      const pixels = new Uint32Array(image.data.buffer);
      pixels.fill(this.words.background);
      const { states, cols, ratio } = this;
      const byCode = new Uint32Array(128);
      for (const [code, word] of Object.entries(this.words)) {
        if (code.length === 1) byCode[code.charCodeAt(0)] = word;
      }
      const side = Math.max(1, Math.round(this.size * ratio));
      const step = this.pitch * ratio;
      let col = 0;
      let row = 0;
      for (let i = 0; i < states.length; i += 1) {
        const x = Math.round(col * step);
        const y = Math.round(row * step);
        const colour = byCode[states.charCodeAt(i)];
        const across = Math.min(side, width - x);
        const down = Math.min(side, height - y);
        for (let r = 0, at = y * width + x; r < down; r += 1, at += width) {
          for (let k = 0; k < across; k += 1) pixels[at + k] = colour;
        }
        col += 1;
        if (col === cols) {
          col = 0;
          row += 1;
        }
      }
      this.context.putImageData(image, 0, 0);
      if (this.size >= LABEL_SIZE) for (let i = 0; i < states.length; i += 1) this.label(i);
      if (this.selected !== null) this.paintCell(this.selected);
      if (document.activeElement === this.canvas) this.paintCell(this.cursor);
    }

    paintCell(i) {
      if (i === null || i < 0 || i >= this.states.length) return;
      const c = this.context;
      const { x, y, side } = this.cell(i);
      const gap = Math.round(this.gap * this.ratio);
      c.fillStyle = this.colours.background;
      c.fillRect(x - Math.floor(gap / 2), y - Math.floor(gap / 2), side + gap, side + gap);
      c.fillStyle = this.colours[this.states[i]];
      c.fillRect(x, y, side, side);
      if (this.size >= LABEL_SIZE) this.label(i);
      const focused = document.activeElement === this.canvas && i === this.cursor;
      if (i === this.selected || focused) {
        const line = Math.max(1, Math.round(Math.min(2, this.gap) * this.ratio));
        c.strokeStyle = this.colours.ink;
        c.lineWidth = line;
        c.setLineDash(i === this.selected ? [] : [2 * line, 2 * line]);
        c.strokeRect(x + line / 2, y + line / 2, side - line, side - line);
        c.setLineDash([]);
      }
    }

    label(i) {
      const c = this.context;
      const { x, y, side } = this.cell(i);
      c.font = `${Math.round(11 * this.ratio)}px system-ui, sans-serif`;
      c.textAlign = "center";
      c.textBaseline = "middle";
      c.fillStyle = this.states[i] === "p" || this.states[i] === "s" ? "#55606e" : "#fff";
      c.fillText(String(this.frameAt(i)), x + side / 2, y + side / 2 + this.ratio);
    }

    describe() {
      const counts = { p: 0, r: 0, d: 0, f: 0, s: 0 };
      for (const code of Object.keys(counts)) counts[code] = this.count(code);
      const data = this.root.dataset;
      data.count = this.states.length;
      for (const [code, name] of Object.entries(NAMES)) data[name] = counts[code];
      const parts = Object.entries(NAMES).filter(([code]) => counts[code])
        .map(([code, name]) => `${counts[code]} ${name}`);
      const text = `${this.states.length} frames: ${parts.join(", ")}`;
      this.canvas.setAttribute("aria-label",
        `frame map, ${text}. Arrow keys move, Enter opens a frame.`);
      this.info.textContent = this.size < LABEL_SIZE ? "hover a cell for its frame" : "";
    }

    // --- pointer and keyboard ----------------------------------------------------------------

    at(event) {
      const rect = this.canvas.getBoundingClientRect();
      const x = event.clientX - rect.left;
      const y = event.clientY - rect.top;
      const col = Math.floor(x / this.pitch);
      const row = Math.floor(y / this.pitch);
      if (col < 0 || col >= this.cols || row < 0) return null;
      const at = row * this.cols + col;
      return at < this.states.length ? at : null;
    }

    hover(event) {
      const at = this.at(event);
      if (at === null) {
        this.hovered = null;
        this.tip.classList.add("hidden");
        return;
      }
      if (at !== this.hovered) {
        this.hovered = at;
        const frame = this.frameAt(at);
        this.tip.textContent = `frame ${frame} · ${NAMES[this.states[at]]}`;
        clearTimeout(this.hoverTimer);
        if (this.details) {
          this.hoverTimer = setTimeout(async () => {
            const more = await this.details(frame);
            if (more && this.hovered === at) this.tip.textContent += ` · ${more}`;
          }, 250);
        }
      }
      const box = this.box.getBoundingClientRect();
      this.tip.style.left = `${event.clientX - box.left + this.box.scrollLeft + 12}px`;
      this.tip.style.top = `${event.clientY - box.top + this.box.scrollTop + 12}px`;
      this.tip.classList.remove("hidden");
    }

    key(event) {
      const rows = Math.max(1, Math.floor(this.box.clientHeight / this.pitch));
      const moves = {
        ArrowLeft: -1, ArrowRight: 1, ArrowUp: -this.cols, ArrowDown: this.cols,
        PageUp: -this.cols * rows, PageDown: this.cols * rows,
        Home: -this.states.length, End: this.states.length,
      };
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.pick(this.cursor);
        return;
      }
      if (!(event.key in moves)) return;
      event.preventDefault();
      const before = this.cursor;
      this.cursor = Math.min(this.states.length - 1, Math.max(0, this.cursor + moves[event.key]));
      this.paintCell(before);
      this.paintCell(this.cursor);
      this.scrollTo(this.cursor);
      this.announce(`frame ${this.frameAt(this.cursor)}: ${NAMES[this.states[this.cursor]]}`);
    }

    announce(text) {
      this.live.textContent = text;
    }

    scrollTo(position) {
      const y = Math.floor(position / this.cols) * this.pitch;
      if (y < this.box.scrollTop || y + this.pitch > this.box.scrollTop + this.box.clientHeight) {
        this.box.scrollTop = Math.max(0, y - this.box.clientHeight / 2);
      }
    }

    /** The page coordinates of a frame's cell centre (scrolled into view): for tests. */
    cellCenter(frame) {
      const at = this.positionOf(frame);
      if (at === null) return null;
      this.scrollTo(at);
      const rect = this.canvas.getBoundingClientRect();
      return {
        x: rect.left + (at % this.cols) * this.pitch + this.size / 2,
        y: rect.top + Math.floor(at / this.cols) * this.pitch + this.size / 2,
      };
    }

    /** The frames in a state, in rendering order (at most `limit`): for tests and tools. */
    framesIn(state, limit = Infinity) {
      const code = CODES[state] || state;
      const out = [];
      for (let i = this.states.indexOf(code); i >= 0 && out.length < limit;
        i = this.states.indexOf(code, i + 1)) out.push(this.frameAt(i));
      return out;
    }
  }

  window.PeerfarmFrameMap = FrameMap;
})();
