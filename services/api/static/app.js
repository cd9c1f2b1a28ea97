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
  model: "/api/rounds/{round_id}/model",
  gallery: "/api/rounds/{round_id}/gallery",
  quality: "/api/rounds/{round_id}/quality",
  cancelJob: "/api/jobs/{job_id}/cancel",
};
const EXPORTS = [["coco", "COCO (RLE)"], ["coco-polygon", "COCO polygons"], ["yolo", "YOLO zip"]];
const GALLERY_PAGE = 24; // thumbnails per gallery page: the page never loads more images at once
const NOT_METRICS = new Set(["round", "round_id", "split"]);
const POLL_MS = 2000;
const LIST_LIMIT = 500; // the API's largest page of datasets and runs
const ACTIVE = new Set(["queued", "running"]);
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
  gallery: new Map(), // round id -> {open, offset, className, sort, data, selected, error}
  quality: new Map(), // round id -> {open, data, error}
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

function duration(seconds) {
  if (!(seconds >= 0)) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function seconds(from, to) {
  return from ? ((to ? Date.parse(to) : Date.now()) - Date.parse(from)) / 1000 : NaN;
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
    run.rounds.map((round) => [state.gallery.get(round.id), state.quality.get(round.id)]),
    run.rounds.some((round) => ACTIVE.has(round.status)) ? Math.floor(Date.now() / 5000) : 0, // durations, ETA
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
        `dataset ${datasetName(run.dataset_id)} · profile ${config.profile ?? "?"} · ${config.supervision ?? "weak"} supervision · seed ${config.seed ?? 0}${config.ccgr === false ? " · no CCGR" : ""} · boxes from ${config.box_source ?? "mil"}${Object.keys(config.overrides || {}).length ? ` · overrides ${Object.entries(config.overrides).map(([k, v]) => `${k}=${v}`).join(", ")}` : ""} · launches ${run.rounds_to_launch ?? 1} round(s) by itself · storage ${(((run.storage_bytes ?? 0) / 1048576)).toFixed(1)} MB · created ${time(run.created_at)}`),
      launch,
    ),
    message ? el("p", { class: message.error ? "form-message error-text" : "form-message" }, message.text) : null,
    renderChart(run),
    run.rounds.length === 0
      ? el("p", { class: "empty" }, "no rounds yet — press “Launch round 1”")
      : [...run.rounds].reverse().map((summary) => renderRound(summary)),
  );
}

function artifactLink(round, artifact) {
  // the artifacts a route serves are links to it
  if (artifact.kind === "pseudo_labels") return url(ROUTES.pseudoLabels, { round_id: round.id });
  if (artifact.kind === "model" && artifact.stage === "is_train") return url(ROUTES.model, { round_id: round.id });
  return null;
}

function renderDownloads(round, artifacts) {
  const hasLabels = artifacts.some((artifact) => artifact.kind === "pseudo_labels" && !artifact.missing);
  const hasModel = artifacts.some((artifact) => artifact.kind === "model" && artifact.stage === "is_train" && !artifact.missing);
  if (!hasLabels && !hasModel) return el("span", { class: "muted downloads" }, "pseudo labels: not produced yet");
  return el("span", { class: "downloads" },
    hasLabels ? "Download pseudo labels: " : null,
    hasLabels ? EXPORTS.flatMap(([format, label], index) => [
      index ? " · " : null,
      el("a", { class: format === "coco" ? "download" : `download-${format}`, download: true,
        href: format === "coco" ? url(ROUTES.pseudoLabels, { round_id: round.id })
          : `${url(ROUTES.pseudoLabels, { round_id: round.id })}?format=${format}` }, label),
    ]) : null,
    hasModel ? [hasLabels ? " · " : null,
      el("a", { class: "download-model", download: true, href: url(ROUTES.model, { round_id: round.id }) }, "model.pt")] : null,
  );
}

function renderRound(summary) {
  const round = state.rounds.get(summary.id)?.data || { ...summary, jobs: [], metrics: [] };
  const artifacts = state.artifacts.get(summary.id)?.list || [];
  const hasLabels = artifacts.some((artifact) => artifact.kind === "pseudo_labels" && !artifact.missing);
  const details = el(
    "details",
    { ontoggle: (event) => (event.target.open ? state.openDetails.add(round.id) : state.openDetails.delete(round.id)) },
    el("summary", {}, `artifacts (${artifacts.length})`),
    artifacts.length === 0
      ? el("p", { class: "empty" }, "no artifacts yet")
      : el("ul", { class: "plain artifacts" },
        artifacts.map((artifact) => {
          const link = artifactLink(round, artifact);
          return el("li", {}, link && !artifact.missing ? el("a", { href: link, download: true }, el("code", {}, artifact.path))
            : el("code", {}, artifact.path), ` ${artifact.stage} / ${artifact.kind}, ${artifact.size} bytes`,
          artifact.missing ? el("span", { class: "error-text" }, " (missing from the store)") : null);
        })),
  );
  details.open = state.openDetails.has(round.id);
  return el(
    "section",
    { class: "round", id: `round-${round.id}` },
    el(
      "div",
      { class: "round-head" },
      el("h4", {}, `Round ${round.number}`),
      el("span", { class: `badge ${round.status}` }, round.status),
      el("span", { class: "muted" },
        `created ${time(round.created_at)} · started ${time(round.started_at)} · finished ${time(round.finished_at)}`),
      renderDownloads(round, artifacts),
    ),
    round.jobs.length === 0 ? el("p", { class: "empty" }, "no jobs") : renderJobs(round),
    hasLabels ? renderQuality(round) : null,
    hasLabels ? renderGallery(round) : null,
    details,
  );
}

function renderJobs(round) {
  const jobs = round.jobs;
  const headers = ["stage", "queue", "device", "status", "progress", "duration", "ETA", "message / error", ""];
  return el(
    "table",
    { class: "jobs" },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      jobs.map((job) => {
        const percent = Math.round((job.progress || 0) * 100);
        const busy = state.busy.has(`job:${job.id}`);
        const elapsed = seconds(job.started_at, job.finished_at);
        const eta = job.status === "running" && job.progress > 0 && job.progress < 1
          ? duration((elapsed * (1 - job.progress)) / job.progress) : "–";
        return el(
          "tr",
          {},
          el("td", {}, job.stage),
          el("td", {}, job.queue),
          el("td", {}, job.device || "–"),
          el("td", {}, el("span", { class: `badge ${job.status}` }, job.status),
            job.attempts > 1 ? el("span", { class: "muted" }, ` (attempt ${job.attempts})`) : null),
          el("td", {}, el("progress", { max: 100, value: percent, title: `${percent}%` }, `${percent}%`), ` ${percent}%`),
          el("td", { class: "duration" }, duration(elapsed)),
          el("td", { class: "eta" }, eta),
          el("td", {},
            job.error ? el("pre", { class: "error-text" }, job.error) : null,
            job.message ? el("span", { class: "muted" }, job.message) : null),
          el("td", {}, ACTIVE.has(job.status)
            ? el("button", { type: "button", class: "small", disabled: busy, onclick: () => cancelJob(job, round),
              title: `cancel round ${round.number}: this stage stops, the stages after it do not run` },
            busy ? "Cancelling…" : "Cancel round")
            : null),
        );
      }),
    ),
  );
}

// ---------------------------------------------------------------- quality and gallery panels

function renderQuality(round) {
  const panel = state.quality.get(round.id) || { open: false };
  const body = [];
  if (panel.error) body.push(el("p", { class: "error-text" }, panel.error));
  else if (!panel.data) body.push(el("p", { class: "empty" }, "loading…"));
  else {
    const q = panel.data;
    body.push(el("p", {}, `${q.instances} instances on ${q.images} train images; ${q.images_without_instances} images without any instance`));
    body.push(el("table", { class: "quality-table" },
      el("thead", {}, el("tr", {}, ["class", "instances", "images", "mean score", "instances / image"].map((h) => el("th", {}, h)))),
      el("tbody", {}, q.classes.map((row) => el("tr", {},
        el("td", {}, row.class), el("td", {}, row.instances), el("td", {}, row.images),
        el("td", {}, fmt(row.mean_score)), el("td", {}, fmt(row.instances_per_image)))))));
    const a = q.agreement;
    body.push(el("p", { class: "agreement" }, a
      ? `vs round ${round.number - 1}: ${a.matched} instances matched (mask IoU ≥ ${a.iou_threshold}), mean IoU ${fmt(a.mean_iou)}, ${a.added} added, ${a.dropped} dropped, ${a.images_changed} images changed`
      : round.number > 1 ? `round ${round.number - 1} has no pseudo labels to compare with` : "round 1: no previous round to compare with"));
    const gt = q.ground_truth;
    body.push(el("p", { class: "ground-truth" }, gt
      ? `against ground truth (${gt.images} train images that have it, ${gt.instances} instances): precision ${fmt(gt.precision)}, recall ${fmt(gt.recall)} at mask IoU ${gt.iou_threshold}, mean IoU of matched ${fmt(gt.matched_iou)}, mAP_r@0.5 ${fmt(gt["mAP_r@0.5"])}`
      : "no ground truth on the train images: precision and recall not available"));
  }
  const details = el("details", { class: "quality", ontoggle: (event) => toggleQuality(round.id, event.target.open) },
    el("summary", {}, "quality of the pseudo labels"), body);
  details.open = panel.open;
  return details;
}

async function toggleQuality(roundId, open) {
  const panel = state.quality.get(roundId) || {};
  if (panel.open === open) return;
  state.quality.set(roundId, { ...panel, open });
  if (open && !panel.data) {
    try {
      state.quality.set(roundId, { open, data: await api("GET", url(ROUTES.quality, { round_id: roundId })) });
    } catch (error) {
      state.quality.set(roundId, { open, error: error.message });
    }
  }
  render();
}

function renderGallery(round) {
  const panel = state.gallery.get(round.id) || { open: false, offset: 0, className: "", sort: "review" };
  const body = [];
  const data = panel.data;
  if (panel.error) body.push(el("p", { class: "error-text" }, panel.error));
  if (data) {
    const classSelect = el("select", { class: "gallery-class", "aria-label": "class filter",
      onchange: (event) => loadGallery(round.id, { className: event.target.value, offset: 0 }) },
    el("option", { value: "" }, "all classes"),
    data.classes.map((c) => el("option", { value: c.class, selected: c.class === panel.className },
      `${c.class} (${c.instances} instances, ${c.images} images)`)));
    const sortSelect = el("select", { class: "gallery-sort", "aria-label": "sort order",
      onchange: (event) => loadGallery(round.id, { sort: event.target.value, offset: 0 }) },
    el("option", { value: "review", selected: panel.sort === "review" }, "review order (no instance, low score, changed)"),
    el("option", { value: "id", selected: panel.sort === "id" }, "image id"));
    const last = Math.min(data.offset + data.items.length, data.total);
    body.push(el("div", { class: "gallery-controls" }, classSelect, sortSelect,
      el("button", { type: "button", class: "page prev", disabled: data.offset === 0,
        onclick: () => loadGallery(round.id, { offset: Math.max(0, data.offset - GALLERY_PAGE) }) }, "‹ previous"),
      el("span", { class: "gallery-range" }, data.total ? `${data.offset + 1}–${last} of ${data.total}` : "no images"),
      el("button", { type: "button", class: "page next", disabled: last >= data.total,
        onclick: () => loadGallery(round.id, { offset: data.offset + GALLERY_PAGE }) }, "next ›")));
    body.push(el("div", { class: "gallery-grid" }, data.items.map((item) => el("figure", {
      class: `thumb${panel.selected && panel.selected.image_id === item.image_id ? " selected" : ""}`,
      onclick: () => { state.gallery.set(round.id, { ...state.gallery.get(round.id), selected: item }); render(); },
      title: `${item.file_name}: click for the full-size overlay`,
    },
    el("img", { src: item.thumbnail_url, alt: `image ${item.image_id}`, loading: "lazy", width: 120 }),
    el("figcaption", {}, `#${item.image_id} · ${item.instances} inst.`,
      item.min_score !== null ? ` · min ${fmt(item.min_score)}` : "",
      item.change !== null ? ` · Δ ${fmt(item.change)}` : "")))));
    if (panel.selected) body.push(renderViewer(round, data, panel.selected));
  } else if (!panel.error) body.push(el("p", { class: "empty" }, "loading…"));
  const details = el("details", { class: "gallery", ontoggle: (event) => toggleGallery(round.id, event.target.open) },
    el("summary", {}, "gallery of the pseudo labels"), body);
  details.open = panel.open;
  return details;
}

function renderViewer(round, data, item) {
  const side = (title, src) => el("figure", {}, el("figcaption", {}, title),
    src ? el("img", { src, alt: title }) : el("p", { class: "empty" }, "no previous round"));
  return el("div", { class: "viewer" },
    el("div", { class: "viewer-head" },
      el("strong", {}, item.file_name), ` · ${item.instances} instances${item.classes.length ? ` (${item.classes.join(", ")})` : ""}`,
      el("button", { type: "button", class: "small close",
        onclick: () => { state.gallery.set(round.id, { ...state.gallery.get(round.id), selected: null }); render(); } }, "close")),
    el("div", { class: "viewer-images" },
      side(`round ${round.number}`, item.overlay_url),
      side(data.previous_round_id ? `round ${round.number - 1}` : "previous round", item.previous_overlay_url)));
}

async function toggleGallery(roundId, open) {
  const panel = state.gallery.get(roundId) || { offset: 0, className: "", sort: "review" };
  if (panel.open === open) return;
  state.gallery.set(roundId, { ...panel, open });
  if (open && !panel.data) await loadGallery(roundId, {});
  else render();
}

async function loadGallery(roundId, change) {
  const panel = { ...state.gallery.get(roundId), ...change };
  const query = new URLSearchParams({ limit: GALLERY_PAGE, offset: panel.offset, sort: panel.sort });
  if (panel.className) query.set("class", panel.className);
  try {
    const data = await api("GET", `${url(ROUTES.gallery, { round_id: roundId })}?${query}`);
    state.gallery.set(roundId, { ...panel, data, error: null, selected: change.offset === undefined ? panel.selected : null });
  } catch (error) {
    state.gallery.set(roundId, { ...panel, error: error.message });
  }
  render();
}

// ---------------------------------------------------------------- chart

function niceMax(value) {
  // the smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((step) => step * power).find((top) => top >= value);
}

function renderChart(run) {
  const rows = state.metrics.get(run.id)?.rows || [];
  const dataset = state.datasets.find((item) => item.id === run.dataset_id);
  const splits = [...new Set(rows.map((row) => row.split))];
  const split = dataset && splits.includes(dataset.val_split) ? dataset.val_split : splits[0];
  const points = rows.filter((row) => row.split === split).sort((a, b) => a.round - b.round);
  const names = [...new Set(points.flatMap((row) => Object.keys(row).filter((key) => !NOT_METRICS.has(key) && typeof row[key] === "number")))];
  const values = points.flatMap((row) => names.map((name) => row[name])).filter((v) => typeof v === "number");
  if (values.length === 0 && valGroundTruth(dataset) === false) {
    return el("p", { class: "empty chart-empty no-ground-truth" }, "no ground truth: metrics not available");
  }
  if (values.length === 0) return el("p", { class: "empty chart-empty" }, "no metrics yet — they appear when a round has been evaluated");

  const W = 520, H = 220, left = 44, right = 12, top = 12, bottom = 34;
  const yMax = niceMax(Math.max(...values) * 1.05);
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
      svg("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, String(Number(v.toPrecision(3)))),
    );
  }
  for (const r of rounds) {
    chart.append(svg("text", { x: x(r), y: H - bottom + 16, class: "tick", "text-anchor": "middle" }, String(r)));
  }
  chart.append(svg("text", { x: (left + W - right) / 2, y: H - 4, class: "axis", "text-anchor": "middle" }, "round"));
  names.forEach((name, index) => {
    const series = points.filter((row) => typeof row[name] === "number");
    const colour = `s${index % 6}`;
    if (series.length > 1) {
      chart.append(svg("polyline", { class: `line ${colour}`, points: series.map((row) => `${x(row.round)},${y(row[name])}`).join(" ") }));
    }
    for (const row of series) {
      chart.append(svg("circle", { class: `dot ${colour}`, cx: x(row.round), cy: y(row[name]), r: 4 },
        svg("title", {}, `${name}, round ${row.round}: ${fmt(row[name])}`)));
    }
  });
  const legend = el("div", { class: "legend" },
    names.map((name, index) => {
      const last = [...points].reverse().find((row) => typeof row[name] === "number");
      return el("span", {}, el("i", { class: `swatch s${index % 6}` }), `${name} ${last ? `(round ${last.round}: ${fmt(last[name])})` : "(–)"}`);
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

async function cancelJob(job, round) {
  const runId = round.run_id;
  const question = `Cancel round ${round.number} of run ${runId}? Its ${job.stage} stage ${job.status === "running" ? "stops" : "never starts"} and the stages after it do not run (finished stages are kept; "Retry round ${round.number}" continues).`;
  if (!window.confirm(question)) return;
  state.busy.add(`job:${job.id}`);
  render();
  try {
    await api("POST", url(ROUTES.cancelJob, { job_id: job.id }));
    state.messages.set(runId, { text: `round ${round.number} cancelled (at its ${job.stage} stage)`, error: false });
  } catch (error) {
    state.messages.set(runId, { text: `Could not cancel round ${round.number}: ${error.message}`, error: true });
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

function parseOverrides(text) {
  // one FIELD=VALUE per line (the API converts and checks the values, as `wsis --set` does)
  const overrides = {};
  for (const line of text.split("\n").map((item) => item.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new ApiError(`profile override "${line}": expected FIELD=VALUE`);
    overrides[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return overrides;
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
      (data) => api("POST", ROUTES.runs, {
        dataset_id: Number(datasetId),
        rounds_to_launch: Number(data.get("rounds_to_launch") || 1),
        config: {
          profile: data.get("profile"),
          seed: Number(data.get("seed") || 0),
          ccgr: !data.get("no_ccgr"),
          box_source: data.get("box_source"),
          overrides: parseOverrides(data.get("overrides") || ""),
        },
      }),
      (run) => `created run ${run.id} — launch its first round in the list${run.rounds_to_launch > 1 ? ` (rounds 2–${run.rounds_to_launch} follow by themselves)` : ""}`,
    );
  });

  poll();
}

document.addEventListener("DOMContentLoaded", setup);
