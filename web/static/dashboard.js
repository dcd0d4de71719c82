// aioshop live dashboard: follows /dashboard/stream (Server-Sent Events read with fetch()) and
// redraws the page. Every value is inserted as text (textContent, SVG attributes): never as HTML.
// Outside development it first signs in (POST /api/v1/auth/login) and keeps the access token in
// memory only.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const FIELDS = ["t", "rps", "p50_ms", "p95_ms", "p99_ms", "errors_per_s", "in_flight",
    "cpu_percent", "rss_mb", "bus_per_s"];
  const KEEP_SECONDS = 600; // history kept in the page (the server keeps its retention)
  let chosenSpan = 0; // seconds of the time axis; 0: fit the data, up to five minutes
  const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#39c5cf",
    "#ff7b72", "#e3b341", "#7ee787", "#79c0ff"];

  const series = new Map(); // "service/instance" -> {service, instance, points: [[t, ...]]}
  let view = null;
  let lastEventAt = 0;

  // -- small helpers -------------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of [].concat(children === undefined ? [] : children)) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString("en-US", {
      minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const pct = (value, digits) =>
    value === null || value === undefined ? "–" : (value * 100).toFixed(digits === undefined ? 1 : digits) + "%";
  const mb = (bytes) => bytes === null || bytes === undefined ? "–" : num(bytes / 1048576, 1) + " MB";
  const money = (cents, currency) =>
    cents === null || cents === undefined ? "–" : num(cents / 100, 2) + " " + (currency || "USD");
  const short = (value, length) => value === null || value === undefined ? "" : String(value).slice(0, length || 8);
  function figure(value) {
    if (value !== null && typeof value === "object") {
      return Object.entries(value).map(([k, v]) => k + "=" + v).join(", ");
    }
    return String(value);
  }

  function replace(id, children) {
    const node = document.getElementById(id);
    if (node) node.replaceChildren(...children);
  }

  function colorOf(key) {
    const keys = Array.from(series.keys()).sort();
    const index = Math.max(0, keys.indexOf(key));
    return PALETTE[index % PALETTE.length];
  }

  function instances() {
    const list = [];
    for (const service of (view && view.services) || []) list.push(...service.instances);
    return list;
  }

  // -- rendering -----------------------------------------------------------------------------

  function renderCards() {
    const totals = view.totals;
    const business = view.business;
    document.getElementById("total-rps").textContent = num(totals.rps, 1);
    document.getElementById("total-rps-where").textContent =
      totals.counted_at === "gateway" ? "entering through the gateway" : "summed over the services";
    document.getElementById("total-errors").textContent = num(totals.errors_per_s, 2);
    document.getElementById("total-error-ratio").textContent = pct(totals.error_ratio) + " of requests";
    replace("total-instances", ["up", "degraded", "down"].map(
      (h) => el("span", { class: "h-" + h }, totals.instances[h] + " " + h)));
    document.getElementById("total-registrations").textContent = String(business.registrations);
    document.getElementById("registrations-total").textContent =
      business.registrations_total === null || business.registrations_total === undefined
        ? "since the dashboard started" : business.registrations_total + " accounts in all";
    document.getElementById("orders-source").textContent = "(" + business.orders_source + ")";
    const statuses = Object.entries(business.orders_by_status);
    replace("orders-by-status", statuses.length
      ? statuses.map(([s, n]) => el("span", { class: "status status-" + s }, s + " " + n))
      : [el("span", { class: "muted" }, "none yet")]);
    const revenue = Object.entries(business.revenue_cents);
    replace("revenue", revenue.length
      ? revenue.map(([c, cents]) => el("span", {}, money(cents, c)))
      : [el("span", { class: "muted" }, "–")]);
    document.getElementById("generated").textContent = view.generated_at;
  }

  function renderInstances() {
    const rows = instances().map((i) => el("tr", { "data-key": i.key }, [
      el("td", {}, i.service),
      el("td", { class: "mono", title: i.instance }, i.instance),
      el("td", {}, el("span", { class: "badge h-" + i.health, title: (i.health_reasons || []).join("; ") },
        i.health)),
      el("td", { class: "mono", title: i.last_seen }, num(i.silent_for, 1) + " s ago"),
      el("td", { class: "n" }, num(i.rps, 1)),
      el("td", { class: "n" }, num(i.p50_ms, 1)),
      el("td", { class: "n" }, num(i.p95_ms, 1)),
      el("td", { class: "n" }, num(i.p99_ms, 1)),
      el("td", { class: "n" }, pct(i.error_ratio)),
      el("td", { class: "n" }, num(i.in_flight, 0)),
      el("td", { class: "n" }, num(i.cpu_percent, 1) + "%"),
      el("td", { class: "n" }, mb(i.rss_bytes)),
    ]));
    if (!rows.length) {
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: 12 },
        "No snapshot received yet: services publish one every second.")));
    }
    document.querySelector("#instances tbody").replaceChildren(...rows);

    const internals = instances().map((i) => {
      const cache = Object.entries(i.cache || {});
      const cells = [
        el("td", {}, i.service),
        el("td", { class: "mono" }, i.instance),
        el("td", {}, cache.length
          ? cache.map(([tier, c]) => el("span", { class: "chip" }, tier + " " + pct(c.ratio, 0)))
          : el("span", { class: "muted" }, "no cache")),
      ];
      if (i.bus) {
        const outbox = i.bus.outbox_pending === null || i.bus.outbox_pending === undefined
          ? "–" : i.bus.outbox_pending + " · " + num(i.bus.outbox_lag_seconds, 1) + " s";
        cells.push(
          el("td", { class: "n" }, String(i.bus.published)),
          el("td", { class: "n" }, String(i.bus.consumed)),
          el("td", { class: "n" }, String(i.bus.retried)),
          el("td", { class: "n" }, String(i.bus.parked)),
          el("td", { class: "n" }, outbox));
      } else {
        cells.push(el("td", { class: "n", colspan: 5 }, "no bus"));
      }
      cells.push(el("td", {}, Object.entries(i.business || {}).map(
        ([name, value]) => el("span", { class: "chip" }, name + ": " + figure(value)))));
      return el("tr", { "data-key": i.key }, cells);
    });
    document.querySelector("#internals tbody").replaceChildren(...internals);
  }

  function renderSagas() {
    const rows = view.sagas.map((s) => el("tr", {}, [
      el("td", { class: "mono", title: s.order_id }, short(s.order_id)),
      el("td", { class: "mono", title: s.correlation_id || "" }, s.correlation_id
        ? el("a", { href: "/dashboard/trace/" + encodeURIComponent(s.correlation_id),
          title: "this order's events, log lines and trace" }, short(s.correlation_id, 12))
        : short(s.correlation_id, 12)),
      el("td", {}, [el("span", { class: "status status-" + s.status }, s.status),
        s.reason ? el("span", { class: "muted" }, " " + s.reason) : null]),
      el("td", { class: "n" }, money(s.total_cents, s.currency)),
      el("td", { class: "steps" }, s.steps.map((step) => el("span", {
        class: "step step-" + step.kind,
        title: step.type + " from " + step.source + " at " + step.at,
      }, step.label))),
    ]));
    if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: 5 }, "No order yet.")));
    document.querySelector("#sagas tbody").replaceChildren(...rows);
  }

  function renderEvents() {
    const items = view.events.map((e) => el("li", {}, [
      el("span", { class: "mono muted" }, String(e.at).slice(11, 19)), " ",
      el("span", { class: "etype" }, e.type), " ",
      el("span", { class: "muted" }, e.source), " ",
      el("span", { class: "summary" }, e.summary),
    ]));
    if (!items.length) items.push(el("li", { class: "empty" }, "No event yet."));
    replace("events", items);
  }

  function renderAlerts() {
    const alerts = view.alerts || { firing: 0, worst: null, alerts: [] };
    const banner = document.getElementById("alerts-banner");
    if (banner) {
      banner.hidden = !alerts.firing;
      banner.className = "alerts-banner sev-" + (alerts.worst || "none");
      replace("alerts-count", [alerts.firing + (alerts.firing === 1 ? " alert" : " alerts") + " firing, worst: " + (alerts.worst || "none")]);
    }
    const items = alerts.alerts.map((a) => el("li", { class: "sev-" + a.severity }, [
      el("span", { class: "badge sev-" + a.severity }, a.severity), " ",
      el("strong", {}, a.name), " ",
      a.instance ? el("span", { class: "mono" }, a.instance) : null, " ",
      el("span", { class: "summary" }, a.summary), " ",
      el("span", { class: "muted", title: a.since }, "since " + String(a.since).slice(0, 19).replace("T", " ") + " UTC"), " ",
      a.graph ? el("a", { href: a.graph, rel: "noopener noreferrer", target: "_blank" }, "graph") : null,
    ]));
    replace("alerts-list", items);
  }

  function renderLegend() {
    const known = new Map(instances().map((i) => [i.key, i]));
    const keys = Array.from(series.keys()).filter((k) => known.has(k)).sort();
    replace("legend", keys.map((key) => {
      const i = known.get(key);
      return el("span", {}, [
        el("span", { class: "swatch", "data-color": colorOf(key) }),
        i.service + " ", el("span", { class: "mono muted" }, i.instance),
        el("span", { class: "h-" + i.health }, " ● " + i.health),
      ]);
    }));
    // Colours through the CSSOM: allowed by the CSP, unlike style attributes.
    for (const swatch of document.querySelectorAll("#legend .swatch")) {
      swatch.style.background = swatch.dataset.color;
    }
  }

  // The y scale: four grid steps of a round size.
  function niceTop(value) {
    if (!(value > 0)) return 1;
    const step = value / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(step)));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      if (step <= factor * magnitude) return 4 * factor * magnitude;
    }
    return 40 * magnitude;
  }

  function label(value) {
    if (value === 0) return "0";
    if (value >= 1000) return num(value, 0);
    return String(Number(value.toPrecision(3)));
  }

  // The x span: what the data covers, rounded up to a span with round ticks (20 s to 5 min).
  const SPANS = [[20, 5], [30, 10], [60, 15], [120, 30], [180, 60], [300, 60]];

  function span(now, known) {
    if (chosenSpan) return [chosenSpan, chosenSpan <= 60 ? 15 : chosenSpan <= 300 ? 60 : 120];
    let oldest = now;
    for (const [key, s] of series) {
      if (known.has(key) && s.points.length) oldest = Math.min(oldest, s.points[0][0]);
    }
    const age = now - oldest;
    for (const entry of SPANS) {
      if (age <= entry[0]) return entry;
    }
    return SPANS[SPANS.length - 1];
  }

  function tickLabel(seconds) {
    if (seconds === 0) return "now";
    return seconds % 60 === 0 ? "-" + seconds / 60 + "m" : "-" + seconds + "s";
  }

  function drawChart(node, metric, now) {
    const column = FIELDS.indexOf(metric);
    const width = Math.max(200, node.clientWidth || 400);
    const height = Math.max(100, node.clientHeight || 150);
    const left = 44, right = 10, top = 8, bottom = 18;
    node.setAttribute("viewBox", "0 0 " + width + " " + height);
    node.setAttribute("preserveAspectRatio", "none");
    const known = new Set(instances().map((i) => i.key));
    const [window_, every] = span(now, known);
    const start = now - window_;
    let max = 0;
    let any = false;
    for (const [key, s] of series) {
      if (!known.has(key)) continue;
      for (const p of s.points) {
        if (p[0] >= start && p[column] !== null && p[column] !== undefined) {
          any = true;
          max = Math.max(max, p[column]);
        }
      }
    }
    const yTop = niceTop(max);
    const x = (t) => left + (t - start) / window_ * (width - left - right);
    const y = (v) => top + (1 - v / yTop) * (height - top - bottom);
    const children = [];
    for (let g = 0; g <= 4; g++) {
      const value = yTop * g / 4;
      children.push(svg("line", { class: "grid-line", x1: left, x2: width - right, y1: y(value), y2: y(value) }));
      children.push(svg("text", { class: "axis-label", x: left - 4, y: y(value) + 3, "text-anchor": "end" },
        label(value)));
    }
    for (let ago = window_; ago >= 0; ago -= every) {
      children.push(svg("text", { class: "axis-label", x: x(now - ago), y: height - 4,
        "text-anchor": ago === window_ ? "start" : ago === 0 ? "end" : "middle" }, tickLabel(ago)));
    }
    if (!any) {
      children.push(svg("text", { class: "chart-empty", x: width / 2, y: height / 2 }, "waiting for data…"));
    }
    for (const key of Array.from(series.keys()).sort()) {
      if (!known.has(key)) continue;
      const color = colorOf(key);
      let d = "";
      let pen = false;
      for (const p of series.get(key).points) {
        if (p[0] < start || p[column] === null || p[column] === undefined) {
          pen = false;
          continue;
        }
        d += (pen ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[column]).toFixed(1);
        pen = true;
      }
      if (d) children.push(svg("path", { class: "series", d: d, stroke: color }));
    }
    node.replaceChildren(...children);
  }

  function renderCharts() {
    const now = Date.now() / 1000;
    for (const node of document.querySelectorAll("svg.chart-svg")) {
      drawChart(node, node.dataset.metric, now);
    }
  }

  function render() {
    if (!view) return;
    renderAlerts();
    renderCards();
    renderInstances();
    renderSagas();
    renderEvents();
    renderLegend();
    renderCharts();
  }

  // -- data ----------------------------------------------------------------------------------

  function merge(history, reset) {
    if (reset) series.clear();
    for (const [key, entry] of Object.entries(history || {})) {
      let s = series.get(key);
      if (!s) {
        s = { service: entry.service, instance: entry.instance, points: [] };
        series.set(key, s);
      }
      s.points.push(...entry.points);
      const horizon = Date.now() / 1000 - KEEP_SECONDS - 5;
      while (s.points.length && s.points[0][0] < horizon) s.points.shift();
    }
    const known = new Set(instances().map((i) => i.key));
    for (const key of Array.from(series.keys())) {
      if (!known.has(key)) series.delete(key);
    }
  }

  function setConnection(kind, text) {
    const node = document.getElementById("conn");
    node.className = "conn conn-" + kind;
    node.textContent = text;
  }

  function setupSpans() {
    for (const button of document.querySelectorAll("#spans button")) {
      button.addEventListener("click", () => {
        chosenSpan = Number(button.dataset.span);
        for (const other of document.querySelectorAll("#spans button")) {
          other.classList.toggle("active", other === button);
        }
        renderCharts();
      });
    }
  }

  // -- the stream: fetch() with a bearer header, Server-Sent Events parsed here --------------
  // The browser's own SSE client cannot send an Authorization header; a token in the URL would be
  // logged.
  // The access token lives in this closure only: never in storage, a cookie or a URL.

  const BACKOFF = [500, 1000, 2000, 5000, 10000, 30000]; // ms between reconnections
  const STALL_MS = 45000; // no byte for this long (three heartbeats): the stream is dead
  const MAX_FRAME = 4 * 1048576; // a frame larger than this is not ours: drop the stream
  let token = null;
  let controller = null;
  let failures = 0;
  let lastByteAt = 0;
  let reconnectTimer = 0;
  let generation = 0; // a sign-out or a new sign-in retires every older stream loop

  function authRequired() {
    return document.body.dataset.auth === "required";
  }

  function schedule(delay) {
    window.clearTimeout(reconnectTimer);
    const jitter = Math.random() * 0.2 * delay;
    reconnectTimer = window.setTimeout(follow, delay + jitter);
  }

  function retryLater(response) {
    let delay = BACKOFF[Math.min(failures, BACKOFF.length - 1)];
    const after = response ? Number(response.headers.get("Retry-After")) : NaN;
    if (after > 0 && after < 3600) delay = Math.max(delay, after * 1000);
    failures += 1;
    setConnection("lost", "reconnecting…");
    schedule(delay);
  }

  function handleFrame(frame) {
    let kind = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line === "" || line.startsWith(":")) continue; // a comment: the heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length || (kind !== "state" && kind !== "tick")) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch (error) {
      return;
    }
    view = payload.view;
    merge(payload.history, kind === "state");
    lastEventAt = Date.now();
    if (kind === "state") setConnection("live", "live");
    render();
  }

  async function follow() {
    const mine = generation;
    if (authRequired() && !token) return;
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = "Bearer " + token;
    controller = new AbortController();
    let response;
    try {
      response = await fetch(document.body.dataset.stream, {
        headers: headers, cache: "no-store", credentials: "omit", signal: controller.signal });
    } catch (error) {
      if (mine === generation) retryLater(null);
      return;
    }
    if (mine !== generation) return;
    if (response.status === 401 || response.status === 403) {
      signOut(response.status === 403
        ? "This account does not have the metrics:read permission."
        : "Your session has ended: sign in again.");
      return;
    }
    if (!response.ok || !response.body) {
      retryLater(response);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    lastByteAt = Date.now();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lastByteAt = Date.now();
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          failures = 0;
          handleFrame(frame);
        }
        if (buffer.length > MAX_FRAME) throw new Error("oversized frame");
      }
    } catch (error) {
      // aborted (sign-out, stall) or broken: reconnect below unless retired
    }
    if (mine !== generation) return;
    // The server ends every stream after its lifetime (or the token's): come back at once.
    retryLater(null);
  }

  function watchdog() {
    if (lastEventAt && Date.now() - lastEventAt > 5000) setConnection("wait", "stalled");
    if (controller && lastByteAt && Date.now() - lastByteAt > STALL_MS) {
      lastByteAt = 0;
      controller.abort();
    }
  }

  function stop() {
    generation += 1;
    window.clearTimeout(reconnectTimer);
    if (controller) controller.abort();
    controller = null;
  }

  function start() {
    stop();
    failures = 0;
    follow();
  }

  // -- sign-in (outside development) ---------------------------------------------------------

  function showLogin(message) {
    const login = document.getElementById("login");
    if (!login) return;
    document.getElementById("dashboard").hidden = true;
    document.getElementById("logout").hidden = true;
    login.hidden = false;
    const error = document.getElementById("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    setConnection("wait", "signed out");
    document.getElementById("login-email").focus();
  }

  function signOut(message) {
    stop();
    token = null;
    view = null;
    series.clear();
    lastEventAt = 0;
    showLogin(message);
  }

  async function signIn(event) {
    event.preventDefault(); // never a browser submission: the CSP forbids it anyway
    const form = event.currentTarget;
    const email = document.getElementById("login-email");
    const password = document.getElementById("login-password");
    const button = document.getElementById("login-submit");
    const error = document.getElementById("login-error");
    if (!form.reportValidity()) return;
    button.disabled = true;
    error.hidden = true;
    let message = null;
    try {
      const response = await fetch(document.body.dataset.login, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ email: email.value, password: password.value }),
        cache: "no-store",
        credentials: "omit",
      });
      if (response.ok) {
        const body = await response.json();
        if (typeof body.access_token !== "string" || !body.access_token) throw new Error("no token");
        token = body.access_token; // the refresh token is not kept: sign in again when it ends
        password.value = "";
        document.getElementById("login").hidden = true;
        document.getElementById("dashboard").hidden = false;
        document.getElementById("logout").hidden = false;
        setConnection("wait", "connecting…");
        start();
      } else if (response.status === 401) {
        message = "Wrong email or password.";
      } else if (response.status === 429) {
        message = "Too many attempts: try again in a moment.";
      } else if (response.status === 422 || response.status === 400) {
        message = "Enter a valid email address and password.";
      } else {
        message = "Signing in failed (" + response.status + "): try again.";
      }
    } catch (failure) {
      message = "The server cannot be reached: try again.";
    } finally {
      button.disabled = false;
    }
    if (message) {
      error.textContent = message;
      error.hidden = false;
    }
  }

  async function logOut() {
    const old = token;
    signOut("Signed out.");
    if (!old) return;
    try {
      await fetch(document.body.dataset.logout, {
        method: "POST", headers: { Authorization: "Bearer " + old }, cache: "no-store",
        credentials: "omit" });
    } catch (error) {
      // the token expires by itself
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupSpans();
    window.setInterval(watchdog, 1000);
    window.addEventListener("resize", renderCharts);
    document.getElementById("logout").addEventListener("click", logOut);
    if (authRequired()) {
      document.getElementById("login-form").addEventListener("submit", signIn);
      showLogin(null);
    } else {
      start();
    }
  });
})();
