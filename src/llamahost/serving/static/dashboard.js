// The dashboard of llamahost's multi-model endpoint: devices and what each model holds there,
// the running models, the library, the Hub with a verdict for this machine before any download,
// pulls with their progress, and a configuration that fits, loaded in one click. Its API:
// docs/API.md. No framework, nothing fetched from anywhere but this server.
"use strict";

const COLORS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#e67700"];
const pulls = new Map();  // ref -> its latest progress
let apiKey = localStorage.getItem("llamahost-key") || "";
let configuring = null;  // the model the configure dialog is for

const $ = (selector) => document.querySelector(selector);

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const answer = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (answer.status === 401) { $("#key-form").hidden = false; throw new Error("this server needs its API key"); }
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error ? data.error.message : answer.statusText);
  return data;
}

function report(error) {
  console.warn(error);
  alert(error.message);
}

// -- devices ------------------------------------------------------------------------------------

async function showDevices() {
  const data = await api("GET", "/api/devices");
  $("#build").textContent = `llama.cpp ${data.llama_cpp}`;
  const colors = new Map();
  $("#devices").replaceChildren(...data.devices.map((device) => {
    const total = device.memory_total || 1;
    const held = device.models.reduce((sum, m) => sum + m.bytes, 0);
    const other = Math.max(total - device.memory_free - held, 0);
    const segments = device.models.map((m) => {
      if (!colors.has(m.model)) colors.set(m.model, COLORS[colors.size % COLORS.length]);
      return element("span", { style: `width:${(100 * m.bytes / total).toFixed(2)}%;background:${colors.get(m.model)}`,
                               title: `${m.model}: ${bytes(m.bytes)}`, "data-model": m.model }, m.model);
    });
    segments.push(element("span", { class: "other", style: `width:${(100 * other / total).toFixed(2)}%`,
                                    title: `used by everything else: ${bytes(other)}` }));
    return element("div", { class: "device", "data-device": device.name },
      element("div", { class: "label" },
        element("strong", {}, `${device.name} `, element("span", { class: "note" }, device.description)),
        element("span", {}, `${bytes(device.memory_free)} free of ${bytes(device.memory_total)}`)),
      element("div", { class: "bar" }, ...segments),
      element("div", { class: "legend" }, device.models.length
        ? device.models.map((m) => `${m.model} ${bytes(m.bytes)}`).join(" · ") : "no model loaded here"));
  }));
}

// -- running models -------------------------------------------------------------------------------

async function showModels() {
  const models = await api("GET", "/api/models");
  $("#models tbody").replaceChildren(...models.map((m) => {
    const running = m.state === "loaded" || m.state === "loading";
    const toggle = element("button", { class: running ? "" : "primary", onclick: () =>
      api("POST", running ? "/api/models/unload" : "/api/models/load", { model: m.name }).then(refresh).catch(report) },
      running ? "Unload" : "Load");
    return element("tr", { "data-model": m.name },
      element("td", {}, m.name),
      element("td", {}, element("span", { class: `badge ${m.state}` }, m.state)),
      element("td", {}, m.tokens_per_second ? m.tokens_per_second.toFixed(1) : "-"),
      element("td", {}, String(m.requests)),
      element("td", {}, String(m.waiting + m.deferred)),
      element("td", {}, m.memory_bytes ? bytes(m.memory_bytes) : "-"),
      element("td", {}, toggle, " ", element("button", { onclick: () => configure(m.name) }, "Configure"), " ",
              element("a", { href: `/#/?model=${encodeURIComponent(m.name)}` }, "Chat")));
  }));
}

// -- library --------------------------------------------------------------------------------------

async function showLibrary() {
  const models = await api("GET", "/api/library");
  $("#library tbody").replaceChildren(...models.map((m) => element("tr", { "data-model": m.name },
    element("td", {}, m.name), element("td", {}, bytes(m.size)), element("td", {}, m.quantization),
    element("td", {}, m.architecture), element("td", {}, String(m.context_length)),
    element("td", {},
      element("button", { class: "primary", onclick: () => configure(m.name) }, "Configure & load"), " ",
      element("button", { onclick: () => remove(m.name) }, "Remove")))));
}

async function remove(name) {
  if (!confirm(`Delete ${name} from the library?`)) return;
  await api("DELETE", `/api/library?model=${encodeURIComponent(name)}`).catch(report);
  refresh();
}

// -- the Hub ----------------------------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const found = await api("GET", `/api/hub/search?q=${encodeURIComponent($("#search").value)}&limit=20`).catch(report);
  $("#results").replaceChildren(...(found || []).map((r) =>
    element("li", { onclick: () => showRepo(r.repo) }, `${r.repo} `,
            element("span", { class: "note" }, `${r.downloads || 0} downloads, ${r.likes || 0} likes`))));
}

const WHERE = { gpu: "fits on the GPU", cpu: "fits in system memory", none: "does not fit", unknown: "unknown" };

async function showRepo(repo) {
  $("#repo").hidden = false;
  $("#repo-name").textContent = repo;
  $("#repo").dataset.repo = repo;
  $("#quants tbody").replaceChildren(element("tr", {}, element("td", { colspan: 5 }, "reading the headers ...")));
  const query = `repo=${encodeURIComponent(repo)}&n_ctx=${$("#fit-ctx").value}&parallel=${$("#fit-parallel").value}`;
  const data = await api("GET", `/api/hub/files?${query}`).catch(report);
  if (!data) return;
  $("#fetched").textContent = `verdicts from the files' headers alone: ${bytes(data.fetched)} fetched by this check`;
  $("#quants tbody").replaceChildren(...data.quantizations.map((q) => {
    const verdict = q.where === "split" ? `fits, ${q.layers_offloaded} layers on the GPU` : WHERE[q.where];
    return element("tr", { "data-quant": q.name },
      element("td", {}, q.tag || q.files[0]), element("td", {}, bytes(q.size)),
      element("td", {}, element("span", { class: `badge ${q.where}`, title: q.error || "" }, verdict)),
      element("td", {}, q.estimate ? bytes(q.estimate.total_bytes) : "-"),
      element("td", {}, element("button", { class: "primary", onclick: () => pull(q.name) }, "Pull")));
  }));
}

async function pull(ref) {
  pulls.set(ref, { model: ref, done: 0, total: 0, bytes_per_second: 0, eta_seconds: null });
  showPulls();
  await api("POST", "/api/pulls", { model: ref }).catch((error) => { pulls.delete(ref); showPulls(); report(error); });
}

function showPulls() {
  $("#pulls").replaceChildren(...[...pulls.values()].map((p) => {
    const share = p.total ? 100 * p.done / p.total : 0;
    const eta = p.eta_seconds === null || p.eta_seconds === undefined ? "" : `, ${Math.ceil(p.eta_seconds)} s left`;
    return element("div", { class: "pull", "data-pull": p.model },
      element("div", {}, `${p.model}: ${bytes(p.done)} of ${bytes(p.total)} at ${bytes(p.bytes_per_second)}/s${eta} `,
              element("button", { onclick: () => api("DELETE", `/api/pulls?model=${encodeURIComponent(p.model)}`)
                                                  .catch(report) }, "Cancel")),
      element("div", { class: "progress" }, element("div", { style: `width:${share.toFixed(1)}%` })));
  }));
}

// -- a configuration that fits ---------------------------------------------------------------------

function formParams() {
  const form = $("#configure-form");
  const cache = form.cache_type.value;
  const layers = form.n_gpu_layers.value.trim();
  const params = { n_ctx: Number(form.n_ctx.value), parallel: Number(form.parallel.value),
                   n_gpu_layers: layers === "" ? "auto" : (isNaN(Number(layers)) ? layers : Number(layers)),
                   cache_type_k: cache, cache_type_v: cache };
  if (cache !== "f16") params.flash_attn = "on";  // a quantized V cache needs flash attention
  return params;
}

async function configure(model) {
  configuring = model;
  $("#configure-model").textContent = model;
  const proposal = await api("POST", "/api/propose", { model }).catch(report);
  if (!proposal) return;
  const form = $("#configure-form");
  form.n_ctx.value = proposal.params.n_ctx;
  form.n_gpu_layers.value = proposal.params.n_gpu_layers;
  form.parallel.value = proposal.params.parallel;
  form.cache_type.value = proposal.params.cache_type_k;
  showEstimate(proposal.estimate);
  $("#configure").showModal();
}

function showEstimate(estimate) {
  $("#configure-estimate").replaceChildren(
    element("div", {}, estimate.fits ? `Fits: ${bytes(estimate.total_bytes)} in all; up to ${bytes(estimate.worst_case_bytes)}`
      + " once the prompt cache is full" : "Does not fit these devices"),
    ...estimate.devices.map((d) => element("div", { class: "note" },
      `${d.name}: ${bytes(d.used)} of ${bytes(d.free)} free (${d.layers} layers)`)));
  $("#configure-load").disabled = !estimate.fits;
}

let estimating = null;
function reestimate() {
  clearTimeout(estimating);  // as the user types: one estimate once they pause
  estimating = setTimeout(() => api("POST", "/api/estimate", { model: configuring, params: formParams() })
    .then(showEstimate).catch((error) => { $("#configure-estimate").textContent = error.message; }), 250);
}

async function load(event) {
  if (event.submitter && event.submitter.value !== "load") return;
  await api("POST", "/api/models", { model: configuring, params: formParams() }).catch(report);
  refresh();
}

// -- live ---------------------------------------------------------------------------------------------

function onEvent(event) {
  if (event.event === "download_progress") {
    pulls.set(event.model, event.data);
    showPulls();
  } else if (event.event === "download_finished" || event.event === "download_failed") {
    pulls.delete(event.model);
    showPulls();
    refresh();
  } else {
    refresh();
  }
}

async function listen() {
  // the router's events (statuses, download progress), read with fetch: EventSource sends no API key
  for (;;) {
    try {
      const answer = await fetch("/models/sse", { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          const record = pending.slice(0, end);
          pending = pending.slice(end + 2);
          if (record.startsWith("data: ")) onEvent(JSON.parse(record.slice(6)));
        }
      }
    } catch (error) {
      console.warn(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));  // the server went away: listen again
  }
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    await Promise.all([showDevices(), showModels(), showLibrary()]);
  } catch (error) {
    console.warn(error);
  } finally {
    refreshing = false;
  }
}

$("#search-form").addEventListener("submit", search);
$("#fit-form").addEventListener("submit", (event) => { event.preventDefault(); showRepo($("#repo").dataset.repo); });
$("#configure-form").addEventListener("input", reestimate);
$("#configure-form").addEventListener("submit", load);
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("#key").value;
  localStorage.setItem("llamahost-key", apiKey);
  $("#key-form").hidden = true;
  refresh();
});
listen();
refresh();
setInterval(refresh, 3000);
