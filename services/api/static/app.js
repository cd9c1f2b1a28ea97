// wsis status page: polls the JSON API every 2 s and renders runs, rounds, jobs and metrics.
// No libraries, no external requests: every URL below is a route of this API (tests/test_status_page.py
// checks each API route string of this file against the OpenAPI paths).
"use strict";

const ROUTES = {
  health: "/api/health",
  datasets: "/api/datasets",
  datasetUpload: "/api/datasets/upload",
  runs: "/api/runs",
  runRounds: "/api/runs/{run_id}/rounds",
  runMetrics: "/api/runs/{run_id}/metrics",
  round: "/api/rounds/{round_id}",
  roundArtifacts: "/api/rounds/{round_id}/artifacts",
  pseudoLabels: "/api/rounds/{round_id}/pseudo-labels",
  cancelJob: "/api/jobs/{job_id}/cancel",
};
const POLL_MS = 2000;
const LIST_LIMIT = 500; // the API's largest page of datasets and runs
const ACTIVE = new Set(["queued", "running"]);
const CHART_METRICS = ["mAP_r@0.25", "mAP_r@0.5", "mAP_b@0.5"];
const TOKEN_KEY = "wsis.apiToken";
// The SVG namespace, taken from an <svg> the HTML parser created (keeps this file free of URLs).
const SVG_NS = (() => {
  const box = document.createElement("div");
  box.innerHTML = "<svg></svg>";
  return box.firstChild.namespaceURI;
})();

const state = {
  datasets: [],
  runs: [],
  rounds: new Map(), // round id -> {key, data}
  artifacts: new Map(), // round id -> {key, list}
  metrics: new Map(), // run id -> {key, rows}
  busy: new Set(), // "run:<id>" / "job:<id>" while a POST is in flight
  messages: new Map(), // run id -> {text, error}
  rendered: new Map(), // run id -> signature of the rendered block
  openDetails: new Set(), // round ids whose artifact list is expanded
};

// ---------------------------------------------------------------- helpers

function url(template, params = {}) {
  return template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name]));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
}

function time(value) {
  return value ? String(value).replace("T", " ").slice(0, 19) : "–";
}

function fmt(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(2);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class ApiError extends Error {}

function describe(status, body) {
  let detail = body && typeof body === "object" && "detail" in body ? body.detail : body;
  if (typeof detail !== "string") detail = detail ? JSON.stringify(detail) : "";
  const hints = {
    401: " (fill in the API token at the top)",
    503: " (is the broker running?)",
  };
  return `${status}: ${detail || "request failed"}${hints[status] || ""}`;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers };
  if (body instanceof FormData) {
    init.body = body; // multipart: the browser sets the boundary
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && token()) headers.Authorization = `Bearer ${token()}`;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(`cannot reach the API (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) throw new ApiError(describe(response.status, data));
  return data;
}

// ---------------------------------------------------------------- polling

let timer = null;
let inFlight = false;
let again = false;

async function poll() {
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  clearTimeout(timer);
  try {
    const [datasets, runs] = await Promise.all(
      [api("GET", `${ROUTES.datasets}?limit=${LIST_LIMIT}`), api("GET", `${ROUTES.runs}?limit=${LIST_LIMIT}`)]);
    state.datasets = datasets;
    state.runs = runs;
    await Promise.all([
      ...runs.flatMap((run) => run.rounds.map(loadRound)),
      ...runs.map(loadMetrics),
    ]);
    banner(null);
    render();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    banner(`Could not refresh: ${error.message}`);
  }
  pollHealth();
  inFlight = false;
  if (again) {
    again = false;
    poll();
  } else {
    timer = setTimeout(poll, POLL_MS);
  }
}

async function loadRound(summary) {
  const key = `${summary.status}|${summary.finished_at || ""}`;
  const cached = state.rounds.get(summary.id);
  if (!cached || cached.key !== key || ACTIVE.has(summary.status)) {
    const data = await api("GET", url(ROUTES.round, { round_id: summary.id }));
    state.rounds.set(summary.id, { key, data });
  }
  const round = state.rounds.get(summary.id).data;
  const artifactKey = round.jobs.map((job) => job.status).join(",");
  const artifacts = state.artifacts.get(round.id);
  if (!artifacts || artifacts.key !== artifactKey) {
    const list = await api("GET", url(ROUTES.roundArtifacts, { round_id: round.id }));
    state.artifacts.set(round.id, { key: artifactKey, list });
  }
}

async function loadMetrics(run) {
  const key = run.rounds.map((round) => `${round.id}:${round.status}`).join(",");
  const cached = state.metrics.get(run.id);
  if (cached && cached.key === key) return;
  const rows = await api("GET", url(ROUTES.runMetrics, { run_id: run.id }));
  state.metrics.set(run.id, { key, rows });
}

async function pollHealth() {
  const badge = document.getElementById("health");
  try {
    const response = await fetch(ROUTES.health, { headers: { Accept: "application/json" } });
    const body = await response.json();
    badge.textContent = body.status === "ok" ? "healthy" : `degraded: database ${body.database}, broker ${body.broker}`;
    badge.className = `badge ${body.status === "ok" ? "succeeded" : "failed"}`;
  } catch (error) {
    badge.textContent = "API unreachable";
    badge.className = "badge failed";
  }
}

function banner(text) {
  const node = document.getElementById("banner");
  node.hidden = !text;
  node.textContent = text || "";
}

// ---------------------------------------------------------------- rendering

function render() {
  renderDatasets();
  const container = document.getElementById("runs");
  if (state.runs.length === 0) {
    container.replaceChildren(el("p", { class: "empty" }, "no runs yet — register a dataset and create a run on the left"));
    state.rendered.clear();
    return;
  }
  container.querySelector(":scope > .empty")?.remove();
  const seen = new Set();
  let previous = null;
  for (const run of [...state.runs].reverse()) { // newest run first
    seen.add(run.id);
    const signature = runSignature(run);
    let node = document.getElementById(`run-${run.id}`);
    if (!node || state.rendered.get(run.id) !== signature) {
      const fresh = renderRun(run);
      if (node) node.replaceWith(fresh);
      node = fresh;
      state.rendered.set(run.id, signature);
    }
    if (previous ? previous.nextSibling !== node : container.firstChild !== node) {
      if (previous) previous.after(node);
      else container.prepend(node);
    }
    previous = node;
  }
  for (const node of [...container.children]) {
    const id = Number(node.id.replace("run-", ""));
    if (!seen.has(id)) {
      node.remove();
      state.rendered.delete(id);
    }
  }
}

function runSignature(run) {
  return JSON.stringify([
    run,
    run.rounds.map((round) => state.rounds.get(round.id)?.data),
    run.rounds.map((round) => state.artifacts.get(round.id)?.key),
    state.metrics.get(run.id)?.rows,
    state.busy.has(`run:${run.id}`),
    [...state.busy].filter((key) => key.startsWith("job:")),
    state.messages.get(run.id),
    datasetName(run.dataset_id),
  ]);
}

function datasetName(id) {
  const dataset = state.datasets.find((item) => item.id === id);
  return dataset ? dataset.name : `#${id}`;
}

function valGroundTruth(dataset) {
  // true / false, or null when the server did not report it (datasets registered before the report existed)
  if (!dataset || !dataset.ground_truth) return null;
  return Boolean(dataset.ground_truth.val && dataset.ground_truth.val.ground_truth);
}

function groundTruthText(dataset) {
  const report = dataset.ground_truth;
  if (!report) return "ground truth not reported";
  if (!report.val) return "no val split: metrics not available";
  const val = report.val;
  if (!val.ground_truth) return "no ground truth in val: metrics not available";
  return val.with_ground_truth === val.images ? "val has ground truth" : `ground truth for ${val.with_ground_truth} of ${val.images} val images`;
}

function renderDatasets() {
  const list = document.getElementById("datasets");
  if (state.datasets.length === 0) {
    list.replaceChildren(el("li", { class: "empty" }, "no datasets yet — register one above"));
  } else {
    list.replaceChildren(
      ...state.datasets.map((dataset) =>
        el(
          "li",
          {},
          el("strong", {}, dataset.name),
          ` (#${dataset.id}) `,
          el("span", { class: "muted" },
            `${dataset.path} · ${dataset.classes.length} classes · ${dataset.num_train_images} train / ${dataset.num_val_images} val images · ${groundTruthText(dataset)}`),
        ),
      ),
    );
  }
  const select = document.getElementById("run-dataset");
  const wanted = state.datasets.map((dataset) => `${dataset.id}:${dataset.name}`).join(",");
  if (select.dataset.options === wanted) return;
  const chosen = select.value;
  select.dataset.options = wanted;
  if (state.datasets.length === 0) {
    select.replaceChildren(el("option", { value: "" }, "no datasets yet"));
    return;
  }
  select.replaceChildren(
    ...state.datasets.map((dataset) => el("option", { value: dataset.id }, `${dataset.name} (#${dataset.id})`)),
  );
  if (state.datasets.some((dataset) => String(dataset.id) === chosen)) select.value = chosen;
}

function renderRun(run) {
  const config = run.config || {};
  const latest = run.rounds[run.rounds.length - 1];
  const active = latest && ACTIVE.has(latest.status);
  const busy = state.busy.has(`run:${run.id}`);
  let label = `Launch round ${latest ? latest.number + 1 : 1}`;
  if (latest && (latest.status === "failed" || latest.status === "cancelled")) label = `Retry round ${latest.number}`;
  const message = state.messages.get(run.id);
  const launch = el(
    "button",
    {
      type: "button",
      class: "launch",
      disabled: active || busy,
      title: active ? `round ${latest.number} is still ${latest.status}` : "queue the next round of this run",
      onclick: () => launchRound(run.id),
    },
    busy ? "Launching…" : active ? `Round ${latest.number} ${latest.status}…` : label,
  );
  return el(
    "article",
    { class: "run card", id: `run-${run.id}` },
    el(
      "div",
      { class: "run-head" },
      el("h3", {}, `Run ${run.id}`),
      el("span", { class: "muted" },
        `dataset ${datasetName(run.dataset_id)} · profile ${config.profile ?? "?"} · ${config.supervision ?? "weak"} supervision · seed ${config.seed ?? 0} · created ${time(run.created_at)}`),
      launch,
    ),
    message ? el("p", { class: message.error ? "form-message error-text" : "form-message" }, message.text) : null,
    renderChart(run),
    run.rounds.length === 0
      ? el("p", { class: "empty" }, "no rounds yet — press “Launch round 1”")
      : [...run.rounds].reverse().map((summary) => renderRound(summary)),
  );
}

function renderRound(summary) {
  const round = state.rounds.get(summary.id)?.data || { ...summary, jobs: [], metrics: [] };
  const artifacts = state.artifacts.get(summary.id)?.list || [];
  const hasLabels = artifacts.some((artifact) => artifact.kind === "pseudo_labels");
  const details = el(
    "details",
    { ontoggle: (event) => (event.target.open ? state.openDetails.add(round.id) : state.openDetails.delete(round.id)) },
    el("summary", {}, `artifacts (${artifacts.length})`),
    artifacts.length === 0
      ? el("p", { class: "empty" }, "no artifacts yet")
      : el("ul", { class: "plain artifacts" },
        artifacts.map((artifact) =>
          el("li", {}, el("code", {}, artifact.path), ` ${artifact.stage} / ${artifact.kind}, ${artifact.size} bytes`))),
  );
  details.open = state.openDetails.has(round.id);
  return el(
    "section",
    { class: "round" },
    el(
      "div",
      { class: "round-head" },
      el("h4", {}, `Round ${round.number}`),
      el("span", { class: `badge ${round.status}` }, round.status),
      el("span", { class: "muted" },
        `created ${time(round.created_at)} · started ${time(round.started_at)} · finished ${time(round.finished_at)}`),
      hasLabels
        ? el("a", { class: "download", href: url(ROUTES.pseudoLabels, { round_id: round.id }), download: true },
          "Download pseudo labels (COCO JSON)")
        : el("span", { class: "muted" }, "pseudo labels: not produced yet"),
    ),
    round.jobs.length === 0 ? el("p", { class: "empty" }, "no jobs") : renderJobs(round.jobs),
    details,
  );
}

function renderJobs(jobs) {
  return el(
    "table",
    { class: "jobs" },
    el("thead", {}, el("tr", {}, ["stage", "queue", "status", "progress", "message / error", ""].map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      jobs.map((job) => {
        const percent = Math.round((job.progress || 0) * 100);
        const busy = state.busy.has(`job:${job.id}`);
        return el(
          "tr",
          {},
          el("td", {}, job.stage),
          el("td", {}, job.queue),
          el("td", {}, el("span", { class: `badge ${job.status}` }, job.status),
            job.attempts > 1 ? el("span", { class: "muted" }, ` (attempt ${job.attempts})`) : null),
          el("td", {}, el("progress", { max: 100, value: percent, title: `${percent}%` }, `${percent}%`), ` ${percent}%`),
          el("td", {},
            job.error ? el("pre", { class: "error-text" }, job.error) : null,
            job.message ? el("span", { class: "muted" }, job.message) : null),
          el("td", {}, ACTIVE.has(job.status)
            ? el("button", { type: "button", class: "small", disabled: busy, onclick: () => cancelJob(job) },
              busy ? "Cancelling…" : "Cancel")
            : null),
        );
      }),
    ),
  );
}

function renderChart(run) {
  const rows = state.metrics.get(run.id)?.rows || [];
  const dataset = state.datasets.find((item) => item.id === run.dataset_id);
  const splits = [...new Set(rows.map((row) => row.split))];
  const split = dataset && splits.includes(dataset.val_split) ? dataset.val_split : splits[0];
  const points = rows.filter((row) => row.split === split).sort((a, b) => a.round - b.round);
  const values = points.flatMap((row) => CHART_METRICS.map((name) => row[name])).filter((v) => typeof v === "number");
  if (values.length === 0 && valGroundTruth(dataset) === false) {
    return el("p", { class: "empty chart-empty no-ground-truth" }, "no ground truth: metrics not available");
  }
  if (values.length === 0) return el("p", { class: "empty chart-empty" }, "no metrics yet — they appear when a round has been evaluated");

  const W = 520, H = 220, left = 44, right = 12, top = 12, bottom = 34;
  const yMax = Math.max(...values) > 1 ? 100 : 1;
  const rounds = points.map((row) => row.round);
  const xMin = Math.min(...rounds), xMax = Math.max(...rounds);
  const x = (r) => (xMax === xMin ? left + (W - left - right) / 2 : left + ((r - xMin) / (xMax - xMin)) * (W - left - right));
  const y = (v) => top + (1 - v / yMax) * (H - top - bottom);

  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": `metrics per round of run ${run.id} (${split} split)` });
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    chart.append(
      svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, String(yMax === 1 ? v.toFixed(2) : v)),
    );
  }
  for (const r of rounds) {
    chart.append(svg("text", { x: x(r), y: H - bottom + 16, class: "tick", "text-anchor": "middle" }, String(r)));
  }
  chart.append(svg("text", { x: (left + W - right) / 2, y: H - 4, class: "axis", "text-anchor": "middle" }, "round"));
  CHART_METRICS.forEach((name, index) => {
    const series = points.filter((row) => typeof row[name] === "number");
    if (series.length > 1) {
      chart.append(svg("polyline", { class: `line s${index}`, points: series.map((row) => `${x(row.round)},${y(row[name])}`).join(" ") }));
    }
    for (const row of series) {
      chart.append(svg("circle", { class: `dot s${index}`, cx: x(row.round), cy: y(row[name]), r: 4 },
        svg("title", {}, `${name}, round ${row.round}: ${fmt(row[name])}`)));
    }
  });
  const legend = el("div", { class: "legend" },
    CHART_METRICS.map((name, index) => {
      const last = [...points].reverse().find((row) => typeof row[name] === "number");
      return el("span", {}, el("i", { class: `swatch s${index}` }), `${name} ${last ? `(round ${last.round}: ${fmt(last[name])})` : "(–)"}`);
    }),
    el("span", { class: "muted" }, `split: ${split}`),
  );
  return el("figure", { class: "chart-box" }, chart, legend);
}

// ---------------------------------------------------------------- actions

async function launchRound(runId) {
  state.busy.add(`run:${runId}`);
  state.messages.delete(runId);
  render();
  try {
    const round = await api("POST", url(ROUTES.runRounds, { run_id: runId }));
    state.messages.set(runId, { text: `round ${round.number} launched`, error: false });
  } catch (error) {
    state.messages.set(runId, { text: `Could not launch: ${error.message}`, error: true });
  }
  state.busy.delete(`run:${runId}`);
  render();
  poll();
}

async function cancelJob(job) {
  state.busy.add(`job:${job.id}`);
  render();
  const round = state.rounds.get(job.round_id)?.data;
  const runId = round ? round.run_id : null;
  try {
    await api("POST", url(ROUTES.cancelJob, { job_id: job.id }));
    if (runId !== null) state.messages.set(runId, { text: `job ${job.id} (${job.stage}) cancelled`, error: false });
  } catch (error) {
    if (runId !== null) state.messages.set(runId, { text: `Could not cancel job ${job.id}: ${error.message}`, error: true });
  }
  state.busy.delete(`job:${job.id}`);
  render();
  poll();
}

async function submitForm(form, makeRequest, describeSuccess) {
  const message = form.querySelector(".form-message");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  message.className = "form-message";
  message.textContent = "sending…";
  try {
    const created = await makeRequest(new FormData(form));
    message.textContent = describeSuccess(created);
    return true;
  } catch (error) {
    message.className = "form-message error-text";
    message.textContent = error.message;
    return false;
  } finally {
    button.disabled = false;
    poll();
  }
}

function setup() {
  const tokenInput = document.getElementById("token");
  tokenInput.value = token();
  tokenInput.addEventListener("input", () => {
    if (tokenInput.value) sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  document.getElementById("token-form").addEventListener("submit", (event) => event.preventDefault());

  const datasetForm = document.getElementById("dataset-form");
  datasetForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = await submitForm(
      datasetForm,
      (data) => {
        const file = data.get("file");
        if (file && file.size > 0) {
          const upload = new FormData();
          upload.append("name", data.get("name"));
          upload.append("file", file);
          return api("POST", ROUTES.datasetUpload, upload);
        }
        if (!data.get("path")) throw new ApiError("give a path on the server or choose a .zip to upload");
        return api("POST", ROUTES.datasets, { name: data.get("name"), path: data.get("path") });
      },
      (dataset) => `registered “${dataset.name}” (#${dataset.id}): ${dataset.classes.length} classes, ${dataset.num_train_images} train / ${dataset.num_val_images} val images`,
    );
    if (ok) datasetForm.reset();
  });

  const runForm = document.getElementById("run-form");
  runForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const datasetId = runForm.elements.dataset_id.value;
    if (!datasetId) {
      const message = runForm.querySelector(".form-message");
      message.className = "form-message error-text";
      message.textContent = "register a dataset first";
      return;
    }
    await submitForm(
      runForm,
      (data) => api("POST", ROUTES.runs, { dataset_id: Number(datasetId), config: { profile: data.get("profile") } }),
      (run) => `created run ${run.id} — launch its first round in the list`,
    );
  });

  poll();
}

document.addEventListener("DOMContentLoaded", setup);
