// codeQ dashboard: the bearer token (kept in this tab's sessionStorage only),
// API errors as readable messages, the DLQ actions through the admin API's
// own endpoints (a confirmation first for anything that destroys data or
// acts on a whole queue), and the throughput charts.
(function () {
  "use strict";

  const KEY = "codeq.token";
  const body = document.body;
  const AUTH = body.dataset.auth === "on";
  const UI = body.dataset.ui;
  const API = body.dataset.api;
  const BOUND = Number(body.dataset.bound); // tasks one "all" action call handles at most
  const $ = (id) => document.getElementById(id);

  const token = () => sessionStorage.getItem(KEY);
  const signedIn = () => !AUTH || Boolean(token());
  const authorization = () => (AUTH && token() ? { Authorization: "Bearer " + token() } : {});
  const plural = (n) => (n === 1 ? "1 task" : n + " tasks");

  // -- messages -----------------------------------------------------------------

  // What went wrong, from the API's error shape {error, code}.
  function reason(status, text) {
    try {
      const found = JSON.parse(text);
      if (found && found.error) return found.error + (found.code ? " (" + found.code + ")" : "");
    } catch (_) {
      // not JSON: said below
    }
    return status === 0 ? "codeQ did not answer (is it running?)" : "HTTP status " + status;
  }

  function paragraph(text, kind) {
    const p = document.createElement("p");
    p.className = kind;
    p.textContent = text;
    return p;
  }

  // One message per failing region (or action); gone once it succeeds again.
  const problems = new Map();
  function problem(key, text) {
    if (text) problems.set(key, text);
    else if (!problems.delete(key)) return;
    const box = $("problems");
    box.replaceChildren(...[...problems.values()].map((t) => paragraph(t, "problem")));
    box.hidden = problems.size === 0;
  }

  function say(text) {
    $("status").textContent = text;
  }

  // -- signing in (authentication on) --------------------------------------------

  function showSignedIn(yes, message) {
    if (!AUTH) return;
    $("login").hidden = yes;
    $("main").hidden = !yes;
    $("sign-out").hidden = !yes;
    $("login-message").textContent = message || "";
    if (!yes) {
      $("whoami").textContent = "";
      for (const key of [...problems.keys()]) problem(key, null);
      $("token").focus();
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    showSignedIn(false, message);
  }

  // A token is kept only once the server accepts it with codeq:admin.
  async function signIn(evt) {
    evt.preventDefault();
    const value = $("token").value.trim();
    let reply = null;
    try {
      reply = await fetch(UI + "/fragments/whoami", { headers: { Authorization: "Bearer " + value } });
    } catch (_) {
      // reply stays null: codeQ did not answer
    }
    if (reply && reply.ok) {
      sessionStorage.setItem(KEY, value);
      $("token").value = "";
      showSignedIn(true);
      $("main").focus();
      htmx.trigger(body, "codeq:login");
      return;
    }
    const why = reply ? reason(reply.status, await reply.text()) : reason(0, "");
    showSignedIn(false, "Not signed in: " + why);
    $("token").select();
  }

  // -- htmx: the token on every request; failures said in words -------------------

  document.addEventListener("htmx:configRequest", (evt) => {
    if (!signedIn()) {
      evt.preventDefault(); // polls wait for a token rather than fail
      return;
    }
    Object.assign(evt.detail.headers, authorization());
  });

  document.addEventListener("htmx:afterRequest", (evt) => {
    const region = evt.detail.target;
    if (!region || !region.id) return;
    if (evt.detail.successful) {
      problem(region.id, null);
      return;
    }
    const xhr = evt.detail.xhr;
    const why = reason(xhr.status, xhr.responseText);
    if (AUTH && (xhr.status === 401 || xhr.status === 403)) {
      signOut("Signed out: " + why);
      return;
    }
    const text = "Could not load " + (region.dataset.what || "this part of the page") + ": " + why;
    if ("inlineErrors" in region.dataset) region.replaceChildren(paragraph(text, "problem"));
    else problem(region.id, text);
  });

  // -- actions: the admin API's DLQ endpoints ------------------------------------

  class ApiError extends Error {
    constructor(status, text) {
      super(reason(status, text));
      this.status = status;
    }
  }

  async function dlq(command, action, ids) {
    const url = API + "/admin/queues/" + encodeURIComponent(command) + "/dlq/" + action;
    let reply;
    try {
      reply = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authorization() },
        body: JSON.stringify(ids ? { ids } : {}),
      });
    } catch (_) {
      throw new ApiError(0, "");
    }
    const text = await reply.text();
    if (!reply.ok) throw new ApiError(reply.status, text);
    return JSON.parse(text)[action === "requeue" ? "requeued" : "removed"];
  }

  const dialog = $("confirm");
  function confirmed(text, label) {
    return new Promise((resolve) => {
      $("confirm-text").textContent = text;
      $("confirm-ok").textContent = label;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  async function act(button) {
    const { action, scope, command } = button.dataset;
    let ids = null; // null: all of the queue's DLQ
    if (scope === "selected") {
      ids = [...button.form.querySelectorAll("input[name=id]:checked")].map((box) => box.value);
      if (!ids.length) {
        say("Select tasks first: none is selected.");
        return;
      }
    } else if (scope === "task") {
      ids = [button.dataset.id];
    }
    const count = ids ? ids.length : Number(button.dataset.count);
    if (action === "purge") {
      const text = "Purge " + plural(count) + " from the dead-letter queue of " + command +
        "? They are deleted for good, with their results; this cannot be undone.";
      if (!(await confirmed(text, "Purge " + plural(count)))) return;
    } else if (!ids) {
      const text = "Requeue all " + plural(count) + " of the dead-letter queue of " + command +
        "? Each goes back to the queue with its attempts reset, and workers will run it again.";
      if (!(await confirmed(text, "Requeue " + plural(count)))) return;
    }
    button.disabled = true;
    try {
      let done = 0;
      for (;;) {
        const n = await dlq(command, action, ids);
        done += n;
        // One call handles at most BOUND tasks: go on up to the count confirmed.
        if (ids || n < BOUND || done >= count) break;
      }
      problem("action", null);
      say((action === "purge" ? "Purged " : "Requeued ") + plural(done) + ".");
    } catch (err) {
      if (AUTH && (err.status === 401 || err.status === 403)) {
        signOut("Signed out: " + err.message);
        return;
      }
      problem("action", "Could not " + action + ": " + err.message);
    } finally {
      button.disabled = false;
      htmx.trigger(body, "codeq:changed");
    }
  }

  document.addEventListener("click", (evt) => {
    const button = evt.target.closest("button[data-action]");
    if (button) act(button);
  });

  document.addEventListener("change", (evt) => {
    if (!evt.target.matches(".select-all")) return;
    for (const box of evt.target.form.querySelectorAll("input[name=id]")) {
      box.checked = evt.target.checked;
    }
  });

  // -- throughput charts ------------------------------------------------------------

  const SERIES = [["created", "#1d4ed8"], ["completed", "#15803d"], ["failed", "#b91c1c"]];
  const HEIGHT = 130;
  const charts = {};
  // In UTC, as every time the pages show.
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", hour12: false, timeZone: "UTC" });

  function draw(summary) {
    const data = JSON.parse(summary.dataset.series);
    const xs = data.created.map((_, i) => data.start + i);
    for (const [name, colour] of SERIES) {
      const box = $("chart-" + name);
      if (!box) continue;
      if (charts[name]) {
        charts[name].setData([xs, data[name]]);
        continue;
      }
      charts[name] = new uPlot({
        width: box.clientWidth || 300,
        height: HEIGHT,
        legend: { show: false },
        tzDate: (t) => uPlot.tzDate(new Date(t * 1000), "Etc/UTC"),
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        series: [{}, { label: name + " per second", stroke: colour, fill: colour + "22", width: 1.5 }],
        axes: [{ space: 45, values: (u, ticks) => ticks.map(clock) }, { size: 44 }],
      }, [xs, data[name]], box);
    }
  }

  htmx.onLoad((elt) => {
    const summary = elt.matches && elt.matches(".throughput-summary") ? elt
      : elt.querySelector && elt.querySelector(".throughput-summary");
    if (summary && window.uPlot) draw(summary);
  });

  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      chart.setSize({ width: $("chart-" + name).clientWidth, height: HEIGHT });
    }
  });

  if (AUTH) {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    showSignedIn(signedIn());
  }
})();
