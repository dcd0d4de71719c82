// The trace view's sign-in (outside development): the page came without data; once signed in
// (POST /api/v1/auth/login, the gateway's, same origin) it reads the trace as JSON and shows it.
// The access token lives in this closure only: never in storage, a cookie or a URL. Every value
// goes in through textContent: nothing from the server is parsed as HTML.
"use strict";
(function () {
  const body = document.body;
  if (body.dataset.auth !== "required") return;
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-submit");

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text == null ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function tag(td, text, className) {
    td.textContent = "";
    const span = document.createElement("span");
    span.className = "tag " + className;
    span.textContent = text;
    td.appendChild(span);
  }

  function show(trace) {
    const sources = {ok: "from the event archive", none: "no archive", unavailable: "the archive cannot be reached"};
    const apis = {ok: "from the trace API", partial: "some traces could not be read", unavailable: "the trace API cannot be reached"};
    const count = (kind) => trace.timeline.filter((item) => item.kind === kind).length;
    document.getElementById("trace-sources").textContent =
      count("event") + " events (" + (sources[trace.archive] || trace.archive) + "), " + count("log") +
      " log lines (" + (trace.logs === "ok" ? "from the log files" : "no log directory (DASHBOARD_LOG_DIR)") + ")" +
      (trace.trace_api && trace.trace_api !== "none" ? ", " + count("span") + " spans (" + (apis[trace.trace_api] || trace.trace_api) + ")" : "") +
      (trace.truncated ? ", cut short." : ".");
    const spans = document.getElementById("trace-spans");
    spans.textContent = "";
    for (const span of trace.spans) {
      const li = document.createElement("li");
      const id = document.createElement("span");
      id.className = "mono";
      id.textContent = span.trace_id;
      li.appendChild(id);
      if (span.status) {
        const status = document.createElement("span");
        status.className = "trace-status status-" + String(span.status).replace(/[^a-z]+/g, "-");
        status.textContent = span.span_count + " spans · " + span.status;
        li.appendChild(status);
      }
      if (span.url && /^https?:\/\//.test(span.url)) {
        const link = document.createElement("a");
        link.href = span.url;
        link.rel = "noopener noreferrer";
        link.target = "_blank";
        link.textContent = "open in the trace UI";
        li.appendChild(link);
      }
      const who = document.createElement("span");
      who.className = "muted";
      who.textContent = span.processes.join(", ");
      li.appendChild(who);
      spans.appendChild(li);
    }
    const notes = document.getElementById("trace-notes");
    notes.textContent = "";
    for (const note of trace.notes || []) {
      const li = document.createElement("li");
      li.textContent = note;
      notes.appendChild(li);
    }
    const rows = document.getElementById("trace-timeline");
    rows.textContent = "";
    for (const item of trace.timeline) {
      const row = document.createElement("tr");
      cell(row, item.time, "mono").title = item.at;
      if (item.kind === "event") {
        row.className = "event";
        tag(cell(row, ""), "event", "tag-event");
        cell(row, item.source);
        cell(row, item.type, "mono");
        cell(row, item.data, "mono detail");
      } else if (item.kind === "span") {
        row.className = "span status-" + String(item.status).replace(/[^a-z]+/g, "-");
        tag(cell(row, ""), "span", "tag-span");
        cell(row, item.service);
        cell(row, item.operation);
        cell(row, item.duration_ms + " ms · " + item.span_kind + " · " + item.status +
          (item.message ? " " + item.message : "") + " trace=" + String(item.trace_id).slice(0, 12), "mono detail");
      } else {
        row.className = "log level-" + String(item.level).toLowerCase();
        tag(cell(row, ""), item.level, "tag-log");
        cell(row, item.process);
        cell(row, item.message);
        cell(row, (item.logger || "") + (item.trace_id ? " trace=" + item.trace_id.slice(0, 12) : ""), "mono detail");
      }
      rows.appendChild(row);
    }
    document.getElementById("login").hidden = true;
    document.getElementById("trace").hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      const login = await fetch(body.dataset.login, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({
          email: document.getElementById("login-email").value,
          password: document.getElementById("login-password").value,
        }),
      });
      if (!login.ok) throw new Error(login.status === 401 ? "Wrong email or password." : "Sign-in failed (" + login.status + ").");
      const token = (await login.json()).access_token;
      const response = await fetch(body.dataset.api, {headers: {Authorization: "Bearer " + token}});
      if (response.status === 403) throw new Error("This account lacks metrics:read.");
      if (!response.ok) throw new Error("The trace could not be read (" + response.status + ").");
      show(await response.json());
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
})();
