// switchyard's dashboard. Plain script, no build step, no external
// resource. It polls the admin_http endpoint every 2 s (status, charts and
// history) and renders with textContent only, so nothing a route
// name, a reason or a backend's error says can become markup.
"use strict";

const STATUS_EVERY_MS = 2000;
const SERIES_EVERY_MS = 2000;
const HISTORY_EVERY_MS = 10000;
const HISTORY_SHOWN = 30;
const TOKEN_KEY = "switchyard-admin-token";

const page = {
  status: null,
  series: new Map(),     // "route/slot" -> points
  seriesUntil: 0,        // the newest point's time: the next poll asks for later ones
  actions: null,         // the server takes actions at all (a token is configured); null: not known yet
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  lastHeard: 0,
  cards: new Map(),      // route name -> its card, kept across renders
  acting: false,         // an action is on its way: every action button waits
  historyGeneration: -1, // the status generation the history table was read at
  historyReadAt: 0,
  problems: "",          // what the problems box says now, to announce changes only
  renders: 0,            // how many times the page was drawn (tests wait on it)
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", headers: authHeaders() });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function authHeaders() {
  return page.token ? { Authorization: `Bearer ${page.token}` } : {};
}

// ---- formatting -------------------------------------------------------

function ago(rfc3339) {
  if (!rfc3339) return "";
  const seconds = Math.round((Date.now() - Date.parse(rfc3339)) / 1000);
  if (!Number.isFinite(seconds)) return rfc3339;
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const percent = (rate) => `${(rate * 100).toFixed(rate < 0.1 ? 2 : 1)} %`;
const millis = (ms) => (ms === null || ms === undefined ? "–" : `${ms < 10 ? ms.toFixed(2) : ms.toFixed(0)} ms`);

// ---- rendering --------------------------------------------------------

function renderHeader(status) {
  document.getElementById("generation").textContent =
    `generation ${status.generation} · ${status.config.file}`;
}

function renderProblems(status) {
  const box = document.getElementById("problems");
  const problems = [];
  if (status.config.error) problems.push(["bad", `The config file has an error; the last good config stays in force:\n${status.config.error}`]);
  if (status.config.needs_restart.length) problems.push(["warn", `Changed in the file but needs a restart: ${status.config.needs_restart.join(", ")}`]);
  if (status.config.pending_edit) {
    const edit = status.config.pending_edit;
    problems.push(["warn", `Removing ${edit.removes.join(", ")} in ${duration(edit.applies_in_ms)} unless the file changes again`]);
  }
  for (const warning of status.state_warnings || []) problems.push(["warn", warning]);
  if (status.tls && status.tls.last_load.error) problems.push(["bad", `TLS certificates did not load: ${status.tls.last_load.error}`]);
  for (const host of status.acme || []) {
    if (host.last_error) problems.push(["warn", `Certificate order for ${host.host} failed: ${host.last_error}`]);
  }
  // A live region: only a change is announced again.
  const said = JSON.stringify(problems);
  if (said === page.problems) return;
  page.problems = said;
  box.replaceChildren(...problems.map(([kind, text]) => el("p", { class: kind }, text)));
}

function routeFlags(route) {
  const flags = [];
  if (route.critical) flags.push(el("span", { class: "pill critical", title: route.critical }, "critical"));
  if (route.maintenance) flags.push(el("span", { class: "pill wait", title: route.maintenance }, "maintenance"));
  if (route.pending) flags.push(el("span", { class: "pill wait" }, `switch to ${route.pending} held until it is healthy`));
  if (route.failed) flags.push(el("span", { class: "pill muted" }, `${route.failed} failed`));
  return flags;
}

function renderRollout(box, rollout) {
  box.hidden = !rollout;
  if (!rollout) return;
  const step = `step ${rollout.step_number} of ${rollout.steps_total} at ${rollout.weight} %`;
  let text;
  if (rollout.phase === "running") {
    const hold = rollout.hold_left_ms ? ` · next step in ${duration(rollout.hold_left_ms)}` : "";
    const verdict = rollout.verdict && rollout.verdict.reason ? ` · ${rollout.verdict.reason}` : "";
    text = `Rollout of ${rollout.slot}: running, ${step}${hold}${verdict}`;
  } else if (rollout.phase === "paused") {
    const hold = rollout.hold_left_ms ? `, ${duration(rollout.hold_left_ms)} left in this step` : "";
    text = `Rollout of ${rollout.slot}: paused at ${step}${hold}`;
  } else {
    text = `Last rollout, of ${rollout.slot}: ${rollout.phase}${rollout.outcome ? ` (${rollout.outcome})` : ""}`;
  }
  box.textContent = text;
}

function renderGuard(box, guard) {
  box.hidden = !guard;
  if (!guard) return;
  const latency = guard.baseline_p95_ms
    ? `p95 ${millis(guard.p95_ms)} against ${millis(guard.baseline_p95_ms)} before (up to +${Math.round(guard.max_latency_increase * 100)} %)`
    : `p95 ${millis(guard.p95_ms)}`;
  box.querySelector(".guard-text").textContent =
    `Guard on ${guard.slot}: ${guard.requests} of ${guard.min_requests} requests seen · ` +
    `errors ${percent(guard.error_rate)} (up to ${percent(guard.max_error_rate)}) · ${latency} · ` +
    `${duration(guard.left_ms)} left`;
  const done = guard.window_ms ? 1 - guard.left_ms / guard.window_ms : 1;
  box.querySelector(".bar-fill").style.width = `${Math.min(100, Math.max(0, done * 100)).toFixed(1)}%`;
}

function backendLine(backend) {
  const check = backend.last_check;
  let detail = "not checked yet";
  if (check) {
    const said = check.ok ? (check.status ? `HTTP ${check.status}` : "ok") : (check.error || `HTTP ${check.status}`);
    detail = `${said}, ${millis(check.latency_ms)}, ${ago(check.at)}`;
  }
  return el("li", {},
    el("span", { class: backend.state }, backend.state), " ", el("code", {}, backend.address),
    el("span", { class: "muted" }, ` · ${detail}`));
}

function sparkline(points, fields) {
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 100 30");
  svg.setAttribute("preserveAspectRatio", "none");
  const values = points.flatMap((p) => fields.map((f) => p[f] ?? 0));
  const top = Math.max(...values, 1e-9);
  fields.forEach((field, index) => {
    if (points.length < 2) return;
    const line = document.createElementNS(svgNs, "polyline");
    const step = 100 / (points.length - 1);
    line.setAttribute("points", points.map((p, i) =>
      `${(i * step).toFixed(2)},${(29 - ((p[field] ?? 0) / top) * 28).toFixed(2)}`).join(" "));
    if (index > 0) line.setAttribute("class", "second");
    svg.append(line);
  });
  return svg;
}

function renderCharts(routeName, slotName) {
  const points = page.series.get(`${routeName}/${slotName}`) || [];
  const last = points[points.length - 1] || {};
  const chart = (label, value, fields) =>
    el("div", { class: "chart" }, label, " ", el("span", { class: "value" }, value), sparkline(points, fields));
  return el("div", { class: "charts", "data-slot": slotName },
    chart("req/s", last.rps === undefined ? "–" : last.rps.toFixed(1), ["rps"]),
    chart("5xx", last.error_rate === undefined ? "–" : percent(last.error_rate), ["error_rate"]),
    chart("p50 / p95", `${millis(last.p50_ms)} / ${millis(last.p95_ms)}`, ["p50_ms", "p95_ms"]));
}

function renderSlot(route, slot) {
  const roles = [];
  if (slot.name === route.active) roles.push("active");
  if (slot.name === route.previous) roles.push("previous");
  if (route.canary && route.canary.slot === slot.name) roles.push(`canary ${route.canary.weight} %`);
  return el("div", { class: `slot${slot.name === route.active ? " is-active" : ""}`, "data-slot": slot.name },
    el("h3", {}, slot.name,
      el("span", { class: `pill ${slot.health}`, "data-health": slot.health }, slot.health),
      el("span", { class: "muted" }, roles.join(" · ")),
      el("span", { class: "muted" }, `${slot.in_flight} in flight${slot.upgraded ? `, ${slot.upgraded} upgraded` : ""}`)),
    el("ul", { class: "backends" }, slot.backends.map(backendLine),
      (slot.names || []).filter((n) => n.error).map((n) => el("li", { class: "bad" }, `${n.name}: ${n.error}`))),
    renderCharts(route.name, slot.name));
}

/// What the action buttons depend on: they are rebuilt only when it
/// changes, so a weight being typed or a slot being chosen is never reset.
function actionsKey(route) {
  return JSON.stringify({
    on: Boolean(page.actions && page.token), active: route.active, previous: route.previous,
    canary: route.canary, rollout: route.rollout && route.rollout.phase, guard: Boolean(route.guard),
    maintenance: Boolean(route.maintenance), slots: route.slots.map((s) => s.name),
  });
}

function renderActions(box, route) {
  const key = actionsKey(route);
  if (box.dataset.key === key) return;
  if (box.contains(document.activeElement)) return; // rebuilt once the operator is done
  box.dataset.key = key;
  box.hidden = !(page.actions && page.token);
  if (box.hidden) return box.replaceChildren();
  const run = (request, label, ask, danger) => el("button", {
    type: "button", "data-action": label, class: danger ? "danger" : undefined,
    onclick: () => {
      if (ask && !window.confirm(`${route.name}: ${ask}?`)) return;
      act(Object.assign({ route: route.name, reason: "from the dashboard" }, request));
    },
  }, label);
  const buttons = [];
  for (const slot of route.slots) {
    if (slot.name !== route.active) {
      buttons.push(run({ cmd: "switch", slot: slot.name }, `switch to ${slot.name}`,
        `switch all traffic from ${route.active} to ${slot.name}`));
    }
  }
  if (route.previous) {
    buttons.push(run({ cmd: "rollback" }, `roll back to ${route.previous}`,
      `roll back from ${route.active} to ${route.previous}`));
  }
  const others = route.slots.filter((s) => s.name !== route.active);
  if (others.length) {
    const slotSelect = el("select", { "aria-label": "canary slot" },
      others.map((s) => el("option", { value: s.name, selected: route.canary && route.canary.slot === s.name }, s.name)));
    const weight = el("input", {
      type: "number", min: 0, max: 100, step: 1, required: true,
      value: route.canary ? route.canary.weight : 0, "aria-label": "canary weight %",
    });
    buttons.push(el("form", {
      onsubmit: (event) => {
        event.preventDefault();
        const percent = weight.valueAsNumber;
        if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
          say("The canary weight is a whole number from 0 to 100.", true);
          return;
        }
        act({ cmd: "canary", route: route.name, slot: slotSelect.value, weight: percent, reason: "from the dashboard" });
      },
    }, "canary", slotSelect, weight, "%", el("button", { type: "submit" }, "set")));
  }
  const rollout = route.rollout;
  if (rollout && (rollout.phase === "running" || rollout.phase === "paused")) {
    buttons.push(run({ cmd: "rollout", action: rollout.phase === "paused" ? "resume" : "pause" },
      rollout.phase === "paused" ? "resume rollout" : "pause rollout"));
    buttons.push(run({ cmd: "rollout", action: "promote" }, "promote rollout", `promote ${rollout.slot} to all traffic`));
    buttons.push(run({ cmd: "rollout", action: "abort" }, "abort rollout", `abort the rollout of ${rollout.slot}`, true));
  }
  if (route.guard) buttons.push(run({ cmd: "confirm" }, "confirm release"));
  buttons.push(route.maintenance
    ? run({ cmd: "maintenance", on: false }, "end maintenance", "end maintenance and serve traffic again")
    : run({ cmd: "maintenance", on: true }, "start maintenance", "answer every request with 503 (maintenance)", true));
  box.replaceChildren(...buttons);
  setActing(page.acting);
}

/// Disables every action while one is on its way, so a double click cannot
/// send a rollback twice (which would roll forward again).
function setActing(acting) {
  page.acting = acting;
  for (const control of document.querySelectorAll(".actions button, .actions input, .actions select")) {
    control.disabled = acting;
  }
}

/// The route's card, kept across renders: its parts are filled in place
/// and its action buttons left alone unless they must change.
function routeCard(name) {
  let card = page.cards.get(name);
  if (!card) {
    card = document.getElementById("route-template").content.firstElementChild.cloneNode(true);
    card.dataset.route = name;
    page.cards.set(name, card);
  }
  return card;
}

function renderRoute(route) {
  const card = routeCard(route.name);
  card.querySelector(".route-name").textContent = route.name;
  const hosts = route.hosts.length ? route.hosts.join(", ") : "any host";
  card.querySelector(".route-match").textContent = `${hosts} · ${route.path_prefix}`;
  card.querySelector(".route-flags").replaceChildren(...routeFlags(route));
  card.querySelector(".active").textContent = route.active;
  card.querySelector(".previous").textContent = route.previous || "none";
  card.querySelector(".canary").textContent = route.canary && route.canary.weight
    ? `${route.canary.slot} at ${route.canary.weight} %` : "none";
  card.querySelector(".decided").textContent = `${route.decided_by}, ${ago(route.changed_at)}`;
  renderRollout(card.querySelector(".rollout"), route.rollout);
  renderGuard(card.querySelector(".guard"), route.guard);
  card.querySelector(".slots").replaceChildren(...route.slots.map((slot) => renderSlot(route, slot)));
  renderActions(card.querySelector(".actions"), route);
  return card;
}

function renderCertificates(status) {
  const rows = [];
  for (const cert of (status.tls && status.tls.certificates) || []) {
    const left = cert.not_after_unix * 1000 - Date.now();
    rows.push(el("tr", {}, el("td", {}, cert.names.join(", ")), el("td", {}, cert.cert),
      el("td", {}, cert.not_after), el("td", { class: left < 14 * 86400000 ? "bad" : "" }, duration(left))));
  }
  for (const host of status.acme || []) {
    if (!host.not_after_unix) continue;
    const left = host.not_after_unix * 1000 - Date.now();
    rows.push(el("tr", {}, el("td", {}, host.host), el("td", {}, "ACME"),
      el("td", {}, new Date(host.not_after_unix * 1000).toISOString()), el("td", {}, duration(left))));
  }
  document.getElementById("certificates-section").hidden = rows.length === 0;
  document.querySelector("#certificates tbody").replaceChildren(...rows);
}

function renderNotify(status) {
  const targets = status.notify || [];
  document.getElementById("notify-section").hidden = targets.length === 0;
  document.querySelector("#notify tbody").replaceChildren(...targets.map((t) => el("tr", {},
    el("td", {}, t.target), el("td", {}, t.delivered), el("td", { class: t.failed ? "bad" : "" }, t.failed),
    el("td", {}, t.last_error ? `${t.last_error} (${ago(t.last_error_at)})` : ""))));
}

function render() {
  const status = page.status;
  if (!status) return;
  page.renders += 1;
  renderHeader(status);
  renderProblems(status);
  const routes = document.getElementById("routes");
  const cards = status.routes.map(renderRoute);
  const names = new Set(status.routes.map((r) => r.name));
  for (const name of [...page.cards.keys()]) {
    if (!names.has(name)) page.cards.delete(name);
  }
  // Cards are moved only when the routes themselves changed: moving a
  // card would take the focus out of a field being typed in.
  const inPlace = cards.length === routes.children.length && cards.every((card, i) => routes.children[i] === card);
  if (!inPlace) routes.replaceChildren(...cards);
  renderCertificates(status);
  renderNotify(status);
}

/// Only the charts, when new points came.
function renderAllCharts() {
  for (const box of document.querySelectorAll(".route .charts")) {
    const route = box.closest(".route").dataset.route;
    box.replaceWith(renderCharts(route, box.dataset.slot));
  }
}

function renderHistory(entries) {
  const rows = entries.slice().reverse().map((e) => el("tr", {},
    el("td", { title: e.time }, ago(e.time)), el("td", {}, e.route),
    el("td", {}, e.trigger + (e.uid !== null && e.uid !== undefined ? ` (uid ${e.uid})` : "")),
    el("td", {}, e.action), el("td", {}, [e.from, e.to].filter(Boolean).join(" → ")),
    el("td", {}, e.reason || ""), el("td", { class: String(e.result).startsWith("ok") ? "" : "bad" }, e.result)));
  document.querySelector("#history tbody").replaceChildren(...rows);
}

function renderLive() {
  const live = document.getElementById("live");
  const age = Date.now() - page.lastHeard;
  const fresh = page.lastHeard && age < STATUS_EVERY_MS * 3;
  live.className = `pill ${fresh ? "ok" : "bad"}`;
  live.textContent = fresh ? "live" : page.lastHeard ? `no answer for ${duration(age)}` : "no answer";
}

// ---- polling ----------------------------------------------------------
// Each poll starts again only once the previous one is done, so an older
// answer never lands after a newer one.

async function pollStatus() {
  try {
    page.status = await getJson("/status");
    page.lastHeard = Date.now();
    if (page.actions === null) await checkSession();
    render();
    await pollHistory(false);
  } catch (error) {
    console.warn(error);
  }
  renderLive();
}

/// Asks only for the points after the newest one the page has, and keeps
/// the last 10 minutes of them.
async function pollSeries() {
  try {
    const series = await getJson(`/api/series?since=${page.seriesUntil}`);
    const kept = Math.max(1, Math.round(600000 / series.interval_ms));
    const fresh = new Map();
    let added = false;
    for (const route of series.routes) {
      for (const slot of route.slots) {
        const key = `${route.route}/${slot.slot}`;
        const points = (page.series.get(key) || []).concat(slot.points).slice(-kept);
        fresh.set(key, points);
        for (const point of slot.points) {
          added = true;
          page.seriesUntil = Math.max(page.seriesUntil, point.at_ms);
        }
      }
    }
    page.series = fresh; // slots that left the config leave the charts
    if (added) renderAllCharts();
  } catch (error) {
    console.warn(error);
  }
}

/// The history, read again when the routing generation moved (a change
/// was published) or every 10 s (a refused command publishes nothing).
async function pollHistory(now) {
  const generation = page.status ? page.status.generation : -1;
  const due = Date.now() - page.historyReadAt > HISTORY_EVERY_MS;
  if (!now && generation === page.historyGeneration && !due) return;
  page.historyGeneration = generation;
  page.historyReadAt = Date.now();
  const history = await getJson(`/api/history?limit=${HISTORY_SHOWN}`);
  renderHistory(history.entries);
}

function every(ms, poll) {
  const again = async () => {
    await poll();
    setTimeout(again, ms);
  };
  again();
}

// ---- actions ----------------------------------------------------------

function say(text, bad) {
  const box = document.getElementById("action-result");
  box.hidden = false;
  box.className = bad ? "bad" : "";
  box.textContent = text;
}

async function act(request) {
  if (page.acting) return;
  setActing(true);
  say(`${request.cmd} ${request.route}…`);
  try {
    const response = await fetch("/api/command", {
      method: "POST",
      cache: "no-store",
      headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify(request),
    });
    const answer = await response.json().catch(() => ({ ok: false, error: { message: `HTTP ${response.status}` } }));
    if (response.status === 401) {
      forgetToken();
      say("The token was refused; enter it again.", true);
    } else if (answer.ok) {
      const warning = answer.result && answer.result.warning ? ` (${answer.result.warning})` : "";
      say(`${request.cmd} ${request.route}: done${warning}`);
    } else {
      say(`${request.cmd} ${request.route}: ${(answer.error && answer.error.message) || `HTTP ${response.status}`}`, true);
    }
  } catch (error) {
    say(`${request.cmd} ${request.route}: ${error.message}`, true);
  } finally {
    // The buttons come back with the state the action made.
    try {
      page.status = await getJson("/status");
      render();
      await pollHistory(true);
    } catch (error) {
      console.warn(error);
    }
    setActing(false);
  }
}

function forgetToken() {
  page.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  showSession();
}

function showSession() {
  const known = page.actions !== null;
  document.getElementById("readonly").hidden = !known || page.actions;
  document.getElementById("unlock").hidden = !page.actions || Boolean(page.token);
  document.getElementById("unlocked").hidden = !page.actions || !page.token;
  render();
}

/// Whether actions are on, and whether the kept token still works. Asked
/// again on the next status poll until it gets an answer.
async function checkSession() {
  try {
    const session = await getJson("/api/session");
    page.actions = session.actions;
    if (page.token && !session.authorized) forgetToken();
  } catch (error) {
    console.warn(error);
  }
  showSession();
}

document.getElementById("unlock").addEventListener("submit", async (event) => {
  event.preventDefault();
  page.token = document.getElementById("token").value.trim();
  document.getElementById("token").value = "";
  const session = await getJson("/api/session").catch(() => ({ authorized: false }));
  if (session.authorized) {
    sessionStorage.setItem(TOKEN_KEY, page.token);
    say("Actions unlocked.");
  } else {
    page.token = "";
    say("That token was refused.", true);
  }
  showSession();
});
document.getElementById("lock").addEventListener("click", () => { forgetToken(); say("Actions locked."); });

checkSession();
every(STATUS_EVERY_MS, pollStatus);
every(SERIES_EVERY_MS, pollSeries);
setInterval(renderLive, 1000);
