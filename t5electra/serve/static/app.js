// t5electra playground: plain JavaScript against the server's JSON API (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];        // GET /v1/models -> models
let current = null;     // the selected model's entry
let lastText = "";      // the last prompt / sentence, shown in the attention view by default

// The API key, when the server asks for one (401): typed into the key form, kept for this tab
// only (sessionStorage, never localStorage or a cookie) and sent as a Bearer token.
const KEY_ITEM = "t5electra-api-key";
let apiKey = sessionStorage.getItem(KEY_ITEM) || "";

// -- helpers -----------------------------------------------------------------------------------
async function api(path, body) {
  const headers = apiKey ? {"Authorization": `Bearer ${apiKey}`} : {};
  const init = body === undefined ? {headers} : {
    method: "POST", headers: {...headers, "Content-Type": "application/json"}, body: JSON.stringify(body)};
  const resp = await fetch(path, init);
  let data;
  try { data = await resp.json(); } catch (e) { data = {detail: resp.statusText}; }
  if (resp.status === 401) {
    $("key-form").hidden = false;
    $("api-key").focus();
    throw new Error(apiKey ? "401: the API key was not accepted; enter it again above"
                           : "401: this server needs an API key; enter it above");
  }
  if (!resp.ok) throw new Error(`${resp.status}: ${data.detail || resp.statusText}`);
  return data;
}

function useKey(event) {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  if (apiKey) sessionStorage.setItem(KEY_ITEM, apiKey); else sessionStorage.removeItem(KEY_ITEM);
  $("api-key").value = "";
  $("key-form").hidden = true;
  showError(null);
  loadModels().catch(showError);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

// Run an action with its button disabled; errors go to the banner.
async function busy(button, action) {
  button.disabled = true;
  showError(null);
  try { await action(); } catch (err) { showError(err); } finally { button.disabled = false; }
}

const fmt = (x, digits = 3) => Number(x).toFixed(digits);
const has = (task) => current && current.tasks.includes(task);

// WordPiece tokens back to text ("##" continues the previous word). BERT splits every CJK
// character into its own token, and Chinese has no spaces: none is put next to a CJK character.
const CJK = /[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]/;
function detokenize(tokens) {
  return tokens.reduce((s, t) => t.startsWith("##") ? s + t.slice(2)
    : (s && !CJK.test(s.slice(-1)) && !CJK.test(t[0]) ? s + " " : s) + t, "");
}

// -- models ------------------------------------------------------------------------------------
async function loadModels() {
  const data = await api("/v1/models");
  models = data.models;
  const select = $("model");
  select.replaceChildren(...models.map((m) => el("option", {value: m.name}, `${m.name} (${m.kind})`)));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && models.some((m) => m.name === wanted)) select.value = wanted;
  onModelChange();
}

function onModelChange() {
  current = models.find((m) => m.name === $("model").value) || null;
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = !current || !panel.dataset.task.split(" ").some(has);
  }
  if (!current) return;
  const params = Object.values(current.components).reduce((n, c) => n + c.parameters, 0);
  $("model-info").textContent = `${current.family} · ${current.tasks.join(", ")} · ${params.toLocaleString()} parameters`;
  const names = Object.keys(current.components);
  $("component").replaceChildren(...names.map((n) => el("option", {value: n}, n)));
  $("component-label").hidden = names.length < 2;
  $("stack-label").hidden = current.family !== "t5";
  $("stack").value = "encoder";
  for (const id of ["beams", "heatmap", "corrections", "fill-results", "classify-results", "attention-map"]) {
    const node = $(id);
    (node.tBodies && node.tBodies.length ? node.tBodies[0] : node).replaceChildren();
  }
  updateLayerHead();
}

function updateLayerHead() {
  const comp = current.components[$("component").value];
  const layers = $("stack").value === "encoder" ? comp.num_layers : comp.num_decoder_layers;
  const keep = (select, n) => Math.min(Number(select.value) || 0, n - 1);
  const layer = keep($("layer"), layers);
  $("layer").replaceChildren(...Array.from({length: layers}, (_, i) => el("option", {value: i}, i)));
  $("layer").value = layer;
  const head = $("head").value;
  $("head").replaceChildren(el("option", {value: ""}, "mean of heads"),
    ...Array.from({length: comp.num_heads}, (_, i) => el("option", {value: i}, i)));
  $("head").value = head !== "" && Number(head) < comp.num_heads ? head : "";
}

// -- T5 ----------------------------------------------------------------------------------------
async function generate() {
  const text = $("prefix").value + $("prompt").value;
  const body = {model: current.name, texts: [text], num_beams: Number($("num-beams").value),
                num_return_sequences: Number($("num-return").value),
                max_new_tokens: Number($("max-new-tokens").value), do_sample: $("do-sample").checked};
  if (body.do_sample) body.num_beams = 1;
  const data = await api("/v1/generate", body);
  const rows = data.results[0].outputs.map((o, i) => el("tr", {class: "beam"},
    el("td", {}, i + 1), el("td", {class: "output", title: o.tokens.join(" ")}, o.text || "(empty)"),
    el("td", {class: "num"}, fmt(o.score)), el("td", {class: "num"}, fmt(o.logprob))));
  $("beams").tBodies[0].replaceChildren(...rows);
  lastText = text;
  await showAttention();
}

// -- ELECTRA -----------------------------------------------------------------------------------
async function detect() {
  const sentence = $("sentence").value;
  if (has("detect")) {
    const data = await api("/v1/detect", {model: current.name, texts: [sentence]});
    const tokens = data.results[0].tokens;
    $("heatmap").replaceChildren(...tokens.map((t, i) => el("span", {
      class: "token", title: `P(replaced) = ${fmt(t.prob)} — click for alternatives`,
      style: {background: `rgba(207, 34, 46, ${t.prob.toFixed(3)})`, color: t.prob > 0.6 ? "#fff" : ""},
      onclick: () => maskToken(tokens.map((x) => x.token), i)}, t.token, el("small", {}, fmt(t.prob, 2)))));
  }
  if (has("correct")) {
    const data = await api("/v1/correct", {model: current.name, texts: [sentence]});
    const r = data.results[0];
    const edits = r.edits.map((e) => el("span", {class: "pill"}, `${e.old} → ${e.new} (${fmt(e.prob, 2)})`));
    $("corrections").replaceChildren(el("strong", {}, "correct: "), el("span", {id: "corrected"}, r.corrected),
      el("div", {}, ...(edits.length ? edits : [el("span", {class: "muted"}, "no edits")])));
  }
  lastText = sentence;
  await showAttention();
}

function maskToken(tokens, i) {
  const masked = tokens.map((t, j) => (j === i ? "[MASK]" : t));
  $("masked").value = detokenize(masked).replace(/\[MASK\](?=\S)/g, "[MASK] ");
  if (has("fill-mask")) busy($("fill-btn"), fillMask);
}

async function fillMask() {
  const data = await api("/v1/fill-mask", {model: current.name, texts: [$("masked").value], top_k: 5});
  const r = data.results[0];
  const masks = r.masks.map((m) => el("div", {class: "mask"}, el("span", {class: "muted"}, `position ${m.position}: `),
    ...m.candidates.map((c) => el("span", {class: "pill", title: `p = ${fmt(c.prob, 4)}`},
      c.token, " ", el("span", {class: "bar", style: {width: `${Math.max(2, c.prob * 60)}px`}})))));
  $("fill-results").replaceChildren(el("div", {}, el("strong", {}, "filled: "), el("span", {id: "filled"}, r.filled)),
    ...masks);
}

async function classify() {
  const data = await api("/v1/classify", {model: current.name, texts: [$("classify-text").value]});
  const r = data.results[0];
  const rows = Object.entries(r.scores).map(([label, p]) => el("div", {},
    el("span", {class: "pill"}, label), " ", el("span", {class: "bar", style: {width: `${Math.max(2, p * 200)}px`}}),
    " ", fmt(p)));
  $("classify-results").replaceChildren(el("div", {}, el("strong", {}, "label: "),
    el("span", {id: "label"}, r.label === null ? fmt(r.score) : r.label)), ...rows);
}

// -- attention ---------------------------------------------------------------------------------
// Cells are shaded by sqrt(weight) on an absolute scale: uniform attention over n tokens looks
// pale (1/n each), a head that looks at one token shows one dark cell.
async function showAttention() {
  if (!has("attention")) return;
  const text = $("attention-text").value || lastText || $("prompt").value;
  const body = {model: current.name, text, layer: Number($("layer").value),
                head: $("head").value === "" ? null : Number($("head").value), component: $("component").value};
  if (current.family === "t5") body.stack = $("stack").value;
  const data = await api("/v1/attention", body);
  const head = el("tr", {}, el("th", {}, ""), ...data.key_tokens.map((t) => el("th", {}, t)));
  const rows = data.weights.map((row, q) => el("tr", {}, el("th", {}, data.query_tokens[q]),
    ...row.map((w, k) => el("td", {class: "cell", title: `${data.query_tokens[q]} → ${data.key_tokens[k]}: ${fmt(w)}`,
      "data-weight": w, style: {background: `rgba(9, 105, 218, ${Math.sqrt(w).toFixed(3)})`}}))));
  $("attention-map").replaceChildren(el("caption", {class: "muted"},
    `${data.component} · ${data.stack} · layer ${data.layer} · ${data.head === null ? "mean of heads" : "head " + data.head}`),
    el("thead", {}, head), el("tbody", {}, ...rows));
}

// -- wiring ------------------------------------------------------------------------------------
function wire() {
  $("key-form").addEventListener("submit", useKey);
  $("model").addEventListener("change", onModelChange);
  $("generate-btn").addEventListener("click", () => busy($("generate-btn"), generate));
  $("detect-btn").addEventListener("click", () => busy($("detect-btn"), detect));
  $("fill-btn").addEventListener("click", () => busy($("fill-btn"), fillMask));
  $("classify-btn").addEventListener("click", () => busy($("classify-btn"), classify));
  $("attention-btn").addEventListener("click", () => busy($("attention-btn"), showAttention));
  for (const id of ["stack", "component"]) {
    $(id).addEventListener("change", () => { updateLayerHead(); busy($("attention-btn"), showAttention); });
  }
  for (const id of ["layer", "head"]) $(id).addEventListener("change", () => busy($("attention-btn"), showAttention));
  const enter = (input, button) => $(input).addEventListener("keydown", (e) => { if (e.key === "Enter") $(button).click(); });
  enter("prompt", "generate-btn"); enter("sentence", "detect-btn"); enter("masked", "fill-btn");
  enter("classify-text", "classify-btn"); enter("attention-text", "attention-btn");
}

wire();
loadModels().catch(showError);
