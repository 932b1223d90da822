// The clipkit web page: search the attached collection, classify a dropped image.
// Talks only to this server's own API (see /openapi.json).
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(el, text, isError) {
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function apiError(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
  } catch (_) {
    return `HTTP ${response.status}`;
  }
}

function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
}

async function loadInfo() {
  try {
    const response = await fetch("/v1/info");
    if (!response.ok) throw new Error(await apiError(response));
    const info = await response.json();
    const store = info.store ? ` · collection ${info.store.address} (${info.store.images} images)` : "";
    $("model").textContent = `${info.model} · ${info.dim}-d${store}`;
    $("search-panel").hidden = !info.store;
    $("no-store").hidden = Boolean(info.store);
  } catch (e) {
    $("model").textContent = `cannot reach the server: ${e.message}`;
  }
}

// The API's `before` excludes its day; the page's "until" includes it, so it asks for the day
// after (date inputs give YYYY-MM-DD; computed in UTC so no time zone shifts the day).
function nextDay(day) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

async function runSearch(event) {
  event.preventDefault();
  const status = $("search-status");
  const grid = $("results");
  const q = $("search-q").value.trim();
  if (!q) return;
  setStatus(status, "searching…");
  const params = new URLSearchParams({ q, k: $("search-k").value || "12" });
  // The filters the page offers; the API takes more (near, type, min_size, max_size).
  const after = $("search-after").value;
  if (after) params.set("after", after);
  const until = $("search-until").value;
  if (until) params.set("before", nextDay(until));
  for (const name of ["in", "camera"]) {
    const value = $(`search-${name}`).value.trim();
    if (value) params.set(name, value);
  }
  try {
    const response = await fetch(`/v1/search?${params}`);
    if (!response.ok) throw new Error(await apiError(response));
    const body = await response.json();
    grid.replaceChildren(...body.results.map(resultCard));
    setStatus(status, `${body.results.length} results for “${q}”`);
  } catch (e) {
    grid.replaceChildren();
    setStatus(status, e.message, true);
  }
}

function resultCard(result) {
  const figure = document.createElement("figure");
  figure.className = "result";
  figure.dataset.path = result.path;
  figure.dataset.score = String(result.score);
  const img = document.createElement("img");
  img.src = result.thumbnail;
  img.alt = result.path;
  img.loading = "lazy";
  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = result.score.toFixed(3);
  const path = document.createElement("span");
  path.className = "path";
  path.textContent = ` ${result.path}`;
  caption.append(score, path);
  figure.append(img, caption);
  return figure;
}

let chosenFile = null;

function chooseFile(file) {
  if (!file) return;
  chosenFile = file;
  const preview = $("classify-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("drop").querySelector("span").textContent = file.name;
}

async function runClassify(event) {
  event.preventDefault();
  const status = $("classify-status");
  const file = chosenFile || $("classify-file").files[0];
  if (!file) {
    setStatus(status, "choose or drop an image first", true);
    return;
  }
  const labels = lines($("classify-labels").value);
  if (labels.length === 0) {
    setStatus(status, "type at least one label", true);
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  labels.forEach((l) => form.append("label", l));
  lines($("classify-templates").value).forEach((t) => form.append("template", t));
  setStatus(status, "classifying…");
  try {
    const response = await fetch("/v1/classify", { method: "POST", body: form });
    if (!response.ok) throw new Error(await apiError(response));
    const body = await response.json();
    showBars(body.scores);
    // Which function produced the bars: softmax bars share 100%, sigmoid bars stand alone.
    $("bars").dataset.probability = body.probability;
    $("bars").title = `${body.probability} probabilities`;
    $("classification").hidden = false;
    const best = body.scores.reduce((a, b) => (b.prob > a.prob ? b : a));
    setStatus(status, `most likely: ${best.label}`);
  } catch (e) {
    $("classification").hidden = true;
    setStatus(status, e.message, true);
  }
}

function showBars(scores) {
  const sorted = [...scores].sort((a, b) => b.prob - a.prob);
  $("bars").replaceChildren(
    ...sorted.map((s) => {
      const li = document.createElement("li");
      li.className = "bar";
      li.dataset.label = s.label;
      li.dataset.prob = String(s.prob);
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = s.label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = `${(s.prob * 100).toFixed(2)}%`;
      track.append(fill);
      const prob = document.createElement("span");
      prob.className = "prob";
      prob.textContent = `${(s.prob * 100).toFixed(1)}%`;
      li.append(label, track, prob);
      return li;
    }),
  );
}

function setUpDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) =>
    drop.addEventListener(t, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    }),
  );
  ["dragleave", "drop"].forEach((t) =>
    drop.addEventListener(t, (e) => {
      e.preventDefault();
      drop.classList.remove("over");
    }),
  );
  drop.addEventListener("drop", (e) => chooseFile(e.dataTransfer.files[0]));
  $("classify-file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
}

$("search-form").addEventListener("submit", runSearch);
$("classify-form").addEventListener("submit", runClassify);
setUpDrop();
loadInfo();
