// peerfarm dashboard: one page over the control API (peerfarm/api/app.py).
//
// Owns what the browser shows and sends. Rules: every view is drawn from GET /api/status, and
// for the selected job its summary (GET /api/status?job=ID&limit=0), its frame map from the
// compact GET /api/jobs/ID/frame-states (drawn by framemap.js) and the picked frame alone
// (?job=ID&frames=N): never one JSON object per frame of a big job. Server-sent events from
// /api/events only say "something changed", so each one schedules a debounced refetch, never a
// reload, and the map repaints only the frames whose state changed. Every action
// is a POST carrying `X-Peerfarm: 1` and this browser's action key (`X-Peerfarm-Key`, kept in
// this origin's localStorage: cookies are shared by every port of a host, storage is not); a 401
// opens the login box and the action is retried after a login. A one-time link (`/?login=CODE`,
// printed by `peerfarm up` and `peerfarm dashboard`) is swapped for a session at once. Text
// from the farm (job names, logs) is only ever set as textContent, through plain(): control
// characters and bidirectional overrides show as visible escapes (\x1b, \u202e), as in the CLI
// and the daemon's log.
"use strict";

(() => {
  const REFRESH_DEBOUNCE_MS = 200; // coalesce bursts of change events into one refetch
  const FALLBACK_POLL_MS = 15000; // refetch now and then even if the event stream is quiet
  const ACTION_HEADERS = { "X-Peerfarm": "1" };
  const KEY_STORE = "peerfarm-action-key";

  const state = {
    status: null, // the last GET /api/status
    job: null, // the last GET /api/status?job=<selected>&limit=0 (its summary)
    states: null, // the last GET /api/jobs/<selected>/frame-states
    selected: null, // selected job id
    frame: null, // selected frame number
    frameView: null, // the selected frame, as GET /api/status?job=<selected>&frames=<frame>
    frameKey: null, // what the frame panel last showed (to refetch its log only on change)
    autoSelect: true, // select the newest active job until the user picks one
  };
  // Exposed for tests and for poking around in the console.
  window.peerfarm = { state, refreshes: 0, events: 0, map: null };

  const $ = (id) => document.getElementById(id);

  // Control characters (C0, DEL, C1), line/paragraph separators and bidi overrides.
  const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;
  const SHORT = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

  /** Farm text made inert for display; `multiline` keeps newlines and tabs (log tails). */
  function plain(value, multiline = false) {
    return String(value).replace(UNSAFE, (c) => {
      if (multiline && (c === "\n" || c === "\t")) return c;
      if (SHORT[c]) return SHORT[c];
      const code = c.charCodeAt(0);
      return code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`;
    });
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = plain(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : plain(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(plain(child)));
    }
    return node;
  }

  // --- formatting --------------------------------------------------------------------------

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }

  function eta(job) {
    if (job.state === "done") return "done";
    if (job.state === "cancelled" || job.state === "paused" || job.state === "failed") return "—";
    if (job.blocked) return "blocked";
    if (job.eta_seconds === null || job.eta_seconds === undefined) return "estimating";
    return duration(job.eta_seconds);
  }

  function percent(part, total) {
    return total > 0 ? `${(100 * part) / total}%` : "0%";
  }

  // --- talking to the daemon ---------------------------------------------------------------

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { credentials: "same-origin", ...options });
    } catch (err) {
      return { ok: false, status: 0, data: { error: `cannot reach this peer (${err.message})` } };
    }
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok && !(data && data.error)) {
      data = { error: `${response.status} ${response.statusText}` };
    }
    return { ok: response.ok, status: response.status, data };
  }

  function actionKey() {
    try {
      return localStorage.getItem(KEY_STORE) || "";
    } catch (_) {
      return "";
    }
  }

  function keepKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch (_) {
      // storage disabled: this tab stays logged out
    }
    $("logout").classList.toggle("hidden", !key);
  }

  function post(path, body) {
    const isForm = body instanceof FormData;
    const headers = { ...ACTION_HEADERS };
    if (actionKey()) headers["X-Peerfarm-Key"] = actionKey();
    if (!isForm) headers["Content-Type"] = "application/json";
    return api(path, {
      method: "POST",
      headers,
      body: isForm ? body : JSON.stringify(body || {}),
    });
  }

  // --- refreshing --------------------------------------------------------------------------

  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;

  function scheduleRefresh(delay = REFRESH_DEBOUNCE_MS) {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refresh();
    }, delay);
  }

  async function refresh() {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      const result = await api("/api/status");
      if (result.status === 401) {
        showBanner("This dashboard is not public: log in to see the farm.");
        openLogin(() => scheduleRefresh(0));
        return;
      }
      if (!result.ok) {
        showBanner(result.data.error);
        return;
      }
      hideBanner();
      state.status = result.data;
      chooseJob();
      if (state.selected !== null) {
        const job = encodeURIComponent(state.selected);
        const frame = state.frame;
        // The map asks only for what changed since its last answer (a whole map otherwise).
        const held = state.states && state.states.job === state.selected ? state.states : null;
        const since = held ? `?since=${held.seq}` : "";
        const [detail, states, picked] = await Promise.all([
          api(`/api/status?job=${job}&limit=0`),
          api(`/api/jobs/${job}/frame-states${since}`),
          frame === null ? null : api(`/api/status?job=${job}&frames=${frame}&limit=1`),
        ]);
        let changes = states.ok ? states.data : null;
        const summary = detail.ok && detail.data.jobs && detail.data.jobs[0];
        const stopped = Boolean(summary) && summary.state === "cancelled";
        if (changes && changes.positions && !frameMap().accepts(state.selected, stopped)) {
          const whole = await api(`/api/jobs/${job}/frame-states`); // e.g. just cancelled
          changes = whole.ok ? whole.data : null;
        }
        state.job = detail.ok && changes ? detail.data : null;
        state.states = changes;
        window.peerfarm.statesBytes = (window.peerfarm.statesBytes || 0)
          + (changes ? changes.states.length : 0);
        if (picked && frame === state.frame) {
          state.frameView = picked.ok ? (picked.data.frames || [])[0] || null : null;
        }
        if (detail.status === 404) selectJob(null);
      } else {
        state.job = null;
        state.states = null;
      }
      render();
      window.peerfarm.refreshes += 1;
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh();
      }
    }
  }

  function chooseJob() {
    const jobs = state.status.jobs || [];
    if (state.selected !== null && !jobs.some((j) => j.id === state.selected)) {
      state.selected = null;
      state.frame = null;
    }
    if (state.selected === null && state.autoSelect && jobs.length > 0) {
      const active = jobs.filter((j) => j.state === "active");
      const pool = active.length > 0 ? active : jobs;
      const newest = pool.reduce((a, b) => (b.submitted_at > a.submitted_at ? b : a));
      state.selected = newest.id;
    }
  }

  function selectJob(id, byUser = false) {
    if (byUser) state.autoSelect = false;
    if (state.selected !== id) {
      state.selected = id;
      state.frame = null;
      state.frameView = null;
      state.frameKey = null;
      state.job = null;
      state.states = null;
    }
    history.replaceState(null, "", id ? `#job=${encodeURIComponent(id)}` : location.pathname);
  }

  function connectEvents() {
    const live = $("live");
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      live.dataset.state = "live";
      $("live-text").textContent = "live";
      scheduleRefresh(0);
    });
    source.addEventListener("change", () => {
      window.peerfarm.events += 1;
      scheduleRefresh();
    });
    source.addEventListener("error", () => {
      live.dataset.state = "reconnecting";
      const closed = source.readyState === EventSource.CLOSED;
      $("live-text").textContent = closed ? "offline" : "reconnecting";
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connectEvents, 3000); // the browser gave up (e.g. 401): try again later
      }
    });
  }

  // --- drawing -----------------------------------------------------------------------------

  function render() {
    const status = state.status;
    const node = status.node || {};
    $("node-label").textContent = node.name ? plain(`${node.name} · farm ${node.farm || ""}`) : "";
    document.title = plain(`peerfarm · ${node.name || ""}`);
    renderPeers(status.peers || []);
    renderJobs(status.jobs || []);
    renderDetail();
    fillRenderers(status.peers || []);
  }

  /** Keep one element per key in `parent`, in order: create the missing, drop the gone. */
  function syncChildren(parent, items, keyOf, create, update) {
    const existing = new Map();
    for (const child of Array.from(parent.children)) existing.set(child.dataset.key, child);
    let previous = null;
    for (const item of items) {
      const key = String(keyOf(item));
      let node = existing.get(key);
      if (node) existing.delete(key);
      else {
        node = create(item);
        node.dataset.key = key;
      }
      update(node, item);
      const want = previous ? previous.nextSibling : parent.firstChild;
      if (want !== node) parent.insertBefore(node, want);
      previous = node;
    }
    for (const stale of existing.values()) stale.remove();
  }

  // A cancelled job's last claims stay in the ledger; nothing renders them any more.
  function stoppedJobs() {
    const jobs = (state.status && state.status.jobs) || [];
    return new Set(jobs.filter((j) => j.state === "cancelled").map((j) => j.id));
  }

  function frameState(job, frame) {
    return job.state === "cancelled" && frame.state === "rendering" ? "stopped" : frame.state;
  }

  function renderPeers(peers) {
    const stopped = stoppedJobs();
    peers = peers.map((p) => {
      const rendering = (p.rendering || []).filter((r) => !stopped.has(r.job));
      return { ...p, rendering, busy: Math.min(p.busy, rendering.length) };
    });
    const alive = peers.filter((p) => p.state === "alive");
    const slots = alive.reduce((n, p) => n + p.slots, 0);
    const busy = alive.reduce((n, p) => n + p.busy, 0);
    $("peers-summary").textContent =
      `${alive.length} of ${peers.length} alive · ${busy} of ${slots} slots busy`;
    $("peers-empty").classList.toggle("hidden", peers.length > 0);
    const body = $("peers").tBodies[0];
    syncChildren(body, peers, (p) => p.id, () => el("tr"), (row, peer) => {
      row.dataset.peer = peer.name;
      row.dataset.state = peer.state;
      const renderers = Object.entries(peer.renderers || {}).map(([name, version]) => {
        const all = Array.isArray(version) ? version : [version]; // a list: every Blender
        return el("span", { class: "tag", title: all.join(", "),
          text: `${name} ${all.map(shortVersion).join("/")}` });
      });
      const rendering = (peer.rendering || []).map((r) =>
        el("span", { class: "tag", text: `${r.name} #${r.frame}` }));
      row.replaceChildren(
        el("td", {},
          el("b", { text: peer.name }), el("span", { class: "sub", text: peer.address })),
        el("td", {}, el("span", { class: `chip ${peer.state}`, text: peer.state })),
        el("td", { class: "num", text: peer.slots }),
        el("td", { class: "num", text: peer.busy }),
        el("td", {}, peer.host || "—", el("span", { class: "sub", text: peer.os || "" })),
        el("td", {}, renderers.length ? renderers : "—"),
        el("td", {}, rendering.length ? rendering : el("span", { class: "muted", text: "idle" })),
        el("td", {}, peer.availability
          ? el("span", { class: "chip held", text: peer.availability })
          : el("span", { class: "muted", text: "takes work" })),
        el("td", {}, el("div", { class: "actions" }, hostActions(peer))),
      );
    });
  }

  // Hold / drain / release a host from this peer (a replicated register: every peer obeys).
  function hostActions(peer) {
    if (peer.state !== "alive" && peer.state !== "suspect") return [];
    const held = /^(held|drained) by /.test(peer.availability || "");
    if (held) return [hostButton(peer, "release", "Release")];
    return [
      hostButton(peer, "hold", "Hold"),
      hostButton(peer, "drain", "Drain now", "danger", { now: true }),
    ];
  }

  function hostButton(peer, action, label, extra = "", body = {}) {
    return el("button", {
      type: "button",
      class: `btn small ${extra}`,
      dataset: { hostAction: action },
      onclick: () => runHostAction(peer, action, body),
      text: label,
    });
  }

  async function runHostAction(peer, action, body) {
    if (action === "drain" &&
        !window.confirm(`Stop ${peer.name}'s renders now and hand its frames to other peers?`)) {
      return;
    }
    const result = await post(`/api/peers/${encodeURIComponent(peer.id)}/${action}`, body);
    if (result.status === 401) {
      keepKey(null);
      openLogin(() => runHostAction(peer, action, body));
      return;
    }
    if (!result.ok) {
      toast(result.data.error, true);
      return;
    }
    toast(`${peer.name}: ${result.data.availability || "takes work again"}`);
    scheduleRefresh(0);
  }

  function shortVersion(version) {
    const match = /^\d+(\.\d+){0,2}/.exec(String(version));
    return match ? match[0] : String(version).slice(0, 12);
  }

  function renderJobs(jobs) {
    const active = jobs.filter((j) => j.state === "active").length;
    $("jobs-summary").textContent = jobs.length ? `${active} active of ${jobs.length}` : "";
    $("jobs-empty").classList.toggle("hidden", jobs.length > 0);
    const sorted = [...jobs].sort((a, b) => b.submitted_at - a.submitted_at);
    syncChildren($("jobs").tBodies[0], sorted, (j) => j.id, createJobRow, updateJobRow);
  }

  function createJobRow() {
    const row = el("tr", {
      onclick: (event) => {
        if (event.target.closest("button, a")) return;
        selectJob(row.dataset.job, true);
        scheduleRefresh(0);
      },
    });
    const bar = el("div", { class: "bar" },
      el("span", { class: "done" }), el("span", { class: "rendering" }),
      el("span", { class: "failed" }));
    row.append(
      el("td", { class: "job-name" }),
      el("td", { class: "job-state" }),
      el("td", {}, bar, el("div", { class: "bar-label" }), el("div", { class: "job-wait hidden" })),
      el("td", { class: "num job-frames" }),
      el("td", { class: "num job-eta" }),
      el("td", { class: "job-renderer" }),
      el("td", {}, el("div", { class: "actions" })),
    );
    return row;
  }

  function updateJobRow(row, job) {
    row.dataset.job = job.id;
    row.dataset.state = job.state;
    row.dataset.done = job.frames_done;
    row.classList.toggle("selected", job.id === state.selected);
    // Rebuilt only when it changes: a link rebuilt under the pointer would lose its click.
    const nameKey = JSON.stringify([job.name, job.id, job.submitted_by, job.after || null]);
    if (row.dataset.nameKey !== nameKey) {
      row.dataset.nameKey = nameKey;
      row.querySelector(".job-name").replaceChildren(
        el("b", { text: job.name }),
        el("span", { class: "sub", text: `${job.id.slice(0, 8)} · by ${job.submitted_by}` }),
        job.after ? afterLink(job.after) : null,
      );
    }
    const waits = waitingText(job);
    row.dataset.blocked = job.blocked ? "yes" : "no";
    const wait = row.querySelector(".job-wait");
    wait.textContent = waits ? plain(job.ended ? waits : `waits: ${waits}`) : "";
    wait.title = plain(waits);
    wait.classList.toggle("blocked", Boolean(job.blocked || job.ended));
    wait.classList.toggle("hidden", !waits);
    row.querySelector(".job-state").replaceChildren(
      el("span", { class: `chip ${job.state}`, text: job.state }));
    const [done, rendering, failed] = row.querySelectorAll(".bar > span");
    done.style.width = percent(job.frames_done, job.frames_total);
    const renderingNow = job.state === "cancelled" ? 0 : job.frames_rendering;
    rendering.style.width = percent(renderingNow, job.frames_total);
    failed.style.width = percent(job.frames_failed, job.frames_total);
    const pct = job.frames_total ? Math.floor((100 * job.frames_done) / job.frames_total) : 0;
    const parts = [`${pct}%`];
    if (renderingNow) parts.push(`${renderingNow} rendering`);
    if (job.frames_failed) parts.push(`${job.frames_failed} failed`);
    row.querySelector(".bar-label").textContent = parts.join(" · ");
    row.querySelector(".job-frames").replaceChildren(
      el("span", { class: "done-count", text: job.frames_done }), ` / ${job.frames_total}`);
    row.querySelector(".job-eta").textContent = eta(job);
    row.querySelector(".job-renderer").textContent = plain(job.renderer);
    row.querySelector(".actions").replaceChildren(...jobActions(job));
  }

  // "after bake" (submit --after): a link that selects the job this one waits for.
  function afterLink(after) {
    const link = el("a", {
      class: "sub after",
      href: `#job=${encodeURIComponent(after.id)}`,
      title: after.per_frame ? "frame N starts when its frame N is done" : "starts when it is done",
      text: `after ${after.name}${after.per_frame ? " (frame by frame)" : ""}`,
      onclick: (event) => {
        event.preventDefault();
        selectJob(after.id, true);
        scheduleRefresh(0);
      },
    });
    return link;
  }

  // Why a job waits, in one line: the farm-wide reason when no peer can render it, else each
  // peer's reason while nothing of the job renders (empty when it does not wait).
  function waitingText(job) {
    if (job.ended) return `ended: ${job.ended}`;
    if (job.blocked) return job.blocked;
    const waiting = Object.entries(job.waiting || {});
    if (!waiting.length || job.frames_rendering) return "";
    return waiting.map(([peer, reason]) => `${peer}: ${reason}`).join("; ");
  }

  function jobActions(job) {
    const finished = job.state === "cancelled" || job.state === "done";
    const buttons = [];
    if (job.state === "paused") {
      buttons.push(actionButton(job, "resume", "Resume"));
    } else {
      buttons.push(actionButton(job, "pause", "Pause", job.state !== "active"));
    }
    buttons.push(actionButton(job, "retry", "Retry failed", job.frames_failed === 0));
    buttons.push(actionButton(job, "cancel", "Cancel", finished, "danger"));
    const none = job.frames_done === 0;
    buttons.push(downloadLink(job, "archive", "Frames .zip", none));
    buttons.push(downloadLink(job, "video", "Video", none));
    return buttons;
  }

  function actionButton(job, action, label, disabled = false, extra = "") {
    return el("button", {
      type: "button",
      class: `btn small ${extra}`,
      disabled,
      dataset: { action },
      onclick: () => runAction(job, action),
      text: label,
    });
  }

  function downloadLink(job, what, label, disabled) {
    if (disabled) {
      return el("button", { type: "button", class: "btn small", disabled: true, text: label });
    }
    return el("a", {
      class: "btn small",
      href: `/api/jobs/${encodeURIComponent(job.id)}/${what}`,
      download: "",
      dataset: { link: what },
      text: label,
    });
  }

  async function runAction(job, action) {
    if (action === "cancel" && !window.confirm(`Cancel “${job.name}” on every peer?`)) return;
    const result = await post(`/api/jobs/${encodeURIComponent(job.id)}/${action}`, {});
    if (result.status === 401) {
      keepKey(null); // none, or a session that ended (logout, daemon restart)
      openLogin(() => runAction(job, action));
      return;
    }
    if (!result.ok) {
      toast(result.data.error, true);
      return;
    }
    toast(`${job.name}: ${action} sent to the farm`);
    scheduleRefresh(0);
  }

  // --- the selected job --------------------------------------------------------------------

  function renderDetail() {
    const detail = $("detail");
    const job = state.job && state.job.jobs && state.job.jobs[0];
    if (!job) {
      detail.classList.add("hidden");
      return;
    }
    detail.classList.remove("hidden");
    detail.dataset.job = job.id;
    $("detail-title").textContent = plain(job.name);
    $("detail-summary").textContent = plain([
      `${job.frames_total} frames`,
      job.chunk > 1 ? `chunks of ${job.chunk}` : null,
      `priority ${job.priority}`,
      `${duration(job.seconds_rendered)} rendered`,
      `output ${job.output}`,
    ].filter(Boolean).join(" · "));
    const map = frameMap();
    map.update(job.id, state.states, job.state === "cancelled");
    map.select(state.frame);
    renderFramePanel(job, state.frame === null ? null : state.frameView);
  }

  function frameMap() {
    if (window.peerfarm.map === null) {
      window.peerfarm.map = new window.PeerfarmFrameMap($("frames"), pickFrame, frameLine);
    }
    return window.peerfarm.map;
  }

  /** A line about a hovered frame: its peer, attempts and render time (or error). */
  async function frameLine(frame) {
    if (state.selected === null) return "";
    const job = encodeURIComponent(state.selected);
    const result = await api(`/api/status?job=${job}&frames=${frame}&limit=1`);
    const view = result.ok && (result.data.frames || [])[0];
    if (!view) return "";
    const parts = [];
    if (view.peer) parts.push(plain(view.peer));
    if (view.attempts) parts.push(`attempt ${view.attempts}`);
    if (view.seconds !== null) parts.push(`${view.seconds.toFixed(2)} s`);
    if (view.error) parts.push(plain(view.error).slice(0, 80));
    return parts.join(" · ");
  }

  /** Open a frame's details: its view comes with the next refresh, at once. */
  function pickFrame(frame) {
    if (state.frame === frame) return;
    state.frame = frame;
    state.frameView = null;
    state.frameKey = null;
    $("frame-panel").dataset.frame = frame;
    scheduleRefresh(0);
  }

  function renderFramePanel(job, frame) {
    const panel = $("frame-panel");
    if (!frame) {
      panel.classList.add("hidden");
      return;
    }
    panel.classList.remove("hidden");
    panel.dataset.frame = frame.frame;
    const shown = frameState(job, frame);
    panel.dataset.state = shown;
    $("fp-title").textContent = `Frame ${frame.frame}`;
    $("fp-state").replaceChildren(el("span", { class: `chip ${shown}`, text: shown }));
    $("fp-peer").textContent = plain(frame.peer || "—");
    $("fp-attempts-count").textContent = frame.attempts;
    $("fp-seconds").textContent = (frame.seconds === null ? "—" : `${frame.seconds.toFixed(2)} s`) +
      (frame.memory ? ` · peak ${(frame.memory / 1048576).toFixed(0)} MiB` : "");
    renderFrameWaiting(job, shown);
    const key = `${job.id}/${frame.frame}/${shown}/${frame.attempts}/${frame.peer}`;
    if (key === state.frameKey && shown !== "rendering") return;
    state.frameKey = key;
    const base = `/api/jobs/${encodeURIComponent(job.id)}/frames/${frame.frame}`;
    const thumb = $("fp-thumb");
    const links = $("fp-links");
    if (frame.state === "done") {
      const src = `${base}/thumbnail?v=${frame.attempts}`;
      const img = el("img", { alt: `frame ${frame.frame}`, src });
      img.addEventListener("error",
        () => thumb.replaceChildren(el("span", { text: "no preview" })));
      thumb.replaceChildren(img);
      links.replaceChildren(el("a", { class: "btn small", href: `${base}/output`, download: "",
        text: "Download output" }));
    } else {
      const note = { rendering: "rendering…", stopped: "stopped: the job was cancelled" };
      thumb.replaceChildren(el("span", { text: note[shown] || "no image yet" }));
      links.replaceChildren();
    }
    loadLog(base, key, frame);
  }

  // A pending frame says why it waits: the job's reason and every peer's.
  function renderFrameWaiting(job, shown) {
    const box = $("fp-waiting");
    const waiting = Object.entries(job.waiting || {});
    if (shown !== "pending" || (!job.blocked && !job.ended && !waiting.length)) {
      box.classList.add("hidden");
      box.replaceChildren();
      return;
    }
    box.classList.remove("hidden");
    box.replaceChildren(
      el("h4", { text: job.ended ? "Ended" : "Waiting" }),
      job.ended ? el("p", { class: "blocked", text: job.ended }) : null,
      job.blocked ? el("p", { class: "blocked", text: job.blocked }) : null,
      el("ul", {}, waiting.map(([peer, reason]) =>
        el("li", {}, el("b", { text: peer }), `: ${reason}`))),
    );
  }

  async function loadLog(base, key, frame) {
    const result = await api(`${base}/log`);
    if (state.frameKey !== key) return; // another frame was picked meanwhile
    const attempts = $("fp-attempts");
    const log = $("fp-log");
    if (!result.ok) {
      attempts.replaceChildren();
      log.textContent = plain(result.data.error);
      return;
    }
    const data = result.data;
    if (data.peer) $("fp-peer").textContent = plain(data.peer);
    attempts.replaceChildren(...(data.attempts || []).map((a) => el("li", {},
      `#${a.attempt} on ${a.peer}`,
      a.seconds !== null && a.seconds !== undefined ? ` · ${Number(a.seconds).toFixed(2)} s` : "",
      a.error ? el("span", { class: "err", text: ` · ${a.error}` }) : "")));
    if (frame.state === "done" && data.peer) {
      const seconds = frame.seconds === null ? "" : ` · ${frame.seconds.toFixed(2)} s`;
      attempts.append(el("li", {}, `#${frame.attempts} on ${data.peer}${seconds} · done`));
    }
    if (!attempts.children.length) attempts.append(el("li", { class: "muted", text: "none yet" }));
    const tails = (data.attempts || []).map((a) => a.log_tail).filter(Boolean);
    const text = [data.progress, tails.length ? tails[tails.length - 1] : null].filter(Boolean);
    const none = frame.state === "done" ? "(a successful render keeps no log)" : "(no log yet)";
    log.textContent = text.length ? plain(text.join("\n"), true) : none;
    log.scrollTop = log.scrollHeight;
  }

  // --- upload ------------------------------------------------------------------------------

  function fillRenderers(peers) {
    const select = $("up-renderer");
    const names = new Set();
    for (const peer of peers) {
      if (peer.state === "alive") Object.keys(peer.renderers || {}).forEach((n) => names.add(n));
    }
    const have = new Set(Array.from(select.options).map((o) => o.value));
    for (const name of [...names].sort()) {
      if (!have.has(name)) select.append(el("option", { value: name, text: name }));
    }
  }

  function uploadForm() {
    const form = new FormData();
    const file = $("up-scene").files[0];
    form.append("scene", file, file.name);
    form.append("frames", $("up-frames").value.trim());
    const optional = { renderer: "up-renderer", chunk: "up-chunk", priority: "up-priority",
      name: "up-name", require: "up-require" };
    for (const [field, id] of Object.entries(optional)) {
      const value = $(id).value.trim();
      if (value !== "") form.append(field, value);
    }
    for (const line of $("up-options").value.split("\n")) {
      if (line.trim()) form.append("option", line.trim());
    }
    return form;
  }

  async function submitUpload(event) {
    event.preventDefault();
    const error = $("upload-error");
    error.classList.add("hidden");
    if (!$("up-scene").files.length) {
      showFormError(error, "Choose a scene file.");
      return;
    }
    const button = $("upload-submit");
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      const result = await post("/api/upload", uploadForm());
      if (result.status === 401) {
        keepKey(null);
        openLogin(() => $("upload-form").requestSubmit());
        return;
      }
      if (!result.ok) {
        showFormError(error, result.data.error);
        return;
      }
      $("upload-dialog").close();
      $("upload-form").reset();
      const job = result.data;
      toast(`Submitted ${job.name}: ${job.frames} frames`);
      if (job.warning) toast(job.warning, true); // e.g. no peer can render it
      selectJob(job.job, true);
      scheduleRefresh(0);
    } finally {
      button.disabled = false;
      button.textContent = "Submit";
    }
  }

  // --- login -------------------------------------------------------------------------------

  let afterLogin = null;

  function openLogin(then, message = null) {
    afterLogin = then;
    const dialog = $("login-dialog");
    $("login-error").classList.add("hidden");
    if (message) showFormError($("login-error"), message);
    if (!dialog.open) dialog.showModal();
    $("login-password").focus();
  }

  async function submitLogin(event) {
    event.preventDefault();
    const result = await post("/api/login", { password: $("login-password").value });
    if (!result.ok) {
      const message = result.status === 401 ? "Wrong password." : result.data.error;
      showFormError($("login-error"), message);
      return;
    }
    keepKey(result.data.key);
    $("login-dialog").close();
    $("login-password").value = "";
    toast("Logged in");
    const then = afterLogin;
    afterLogin = null;
    scheduleRefresh(0);
    if (then) then();
  }

  /** `?login=CODE`: spend the one-time code for a session, and drop it from the address bar. */
  async function redeemLink() {
    const params = new URLSearchParams(location.search);
    const code = params.get("login");
    if (code === null) return;
    params.delete("login");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
    const result = await post("/api/login", { code });
    if (result.ok && result.data && result.data.key) {
      keepKey(result.data.key);
      toast("Logged in");
      scheduleRefresh(0);
    } else {
      openLogin(null, result.data.error);
    }
  }

  async function logout() {
    await post("/api/logout", {});
    keepKey(null);
    toast("Logged out");
    scheduleRefresh(0);
  }

  // --- small things ------------------------------------------------------------------------

  function showFormError(node, message) {
    node.textContent = plain(message);
    node.classList.remove("hidden");
  }

  function showBanner(message) {
    const banner = $("banner");
    banner.textContent = plain(message);
    banner.classList.remove("hidden");
  }

  function hideBanner() {
    $("banner").classList.add("hidden");
  }

  function toast(message, isError = false) {
    const kind = isError ? "toast error" : "toast";
    const node = el("div", { class: kind, role: "status", text: message });
    $("toasts").append(node);
    setTimeout(() => node.remove(), isError ? 6000 : 3000);
  }

  function start() {
    const match = /^#job=(.+)$/.exec(location.hash);
    if (match) {
      state.selected = decodeURIComponent(match[1]);
      state.autoSelect = false;
    }
    $("open-upload").addEventListener("click", () => {
      $("upload-error").classList.add("hidden");
      $("upload-dialog").showModal();
    });
    $("upload-cancel").addEventListener("click", () => $("upload-dialog").close());
    $("upload-form").addEventListener("submit", submitUpload);
    $("login-cancel").addEventListener("click", () => $("login-dialog").close());
    $("login-form").addEventListener("submit", submitLogin);
    $("logout").addEventListener("click", logout);
    keepKey(actionKey());
    redeemLink();
    $("fp-close").addEventListener("click", () => {
      state.frame = null;
      state.frameView = null;
      state.frameKey = null;
      renderDetail();
    });
    connectEvents();
    setInterval(() => scheduleRefresh(0), FALLBACK_POLL_MS);
    scheduleRefresh(0);
  }

  start();
})();
