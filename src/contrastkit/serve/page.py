"""The one page of ``contrastkit serve``: plain HTML, inline CSS and script (nothing external);
``__NONCE__`` is replaced by the response's Content-Security-Policy nonce. Data reach the page
only through the JSON API and are inserted as text, never as HTML."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>contrastkit serve</title><link rel="icon" href="data:,">
<style nonce="__NONCE__">
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{padding:10px 16px;background:#243b55;color:#fff;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
header .muted{color:#cfd8e3}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:14px;padding:14px}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:12px}
[hidden]{display:none!important}
h2{font-size:15px;margin:0 0 8px}
.row{display:flex;gap:6px;flex-wrap:wrap;align-items:center;margin-bottom:8px}
input[type=text]{flex:1;min-width:150px;padding:5px}
input[type=number]{width:4em}
#drop{border:2px dashed #aab;border-radius:6px;padding:10px;text-align:center;color:#666}
#drop.over{border-color:#243b55;background:#eef}
img.px{image-rendering:pixelated;width:56px;height:56px;object-fit:contain;background:#111;flex:none}
#gallery{display:flex;flex-wrap:wrap;gap:3px;max-height:430px;overflow:auto}
#gallery img{cursor:pointer;border:2px solid transparent}
#gallery img.sel{border-color:#e67e22}
ol.hits{padding:0;list-style:none;margin:0}
ol.hits li{display:flex;gap:8px;align-items:center;padding:3px 0;border-bottom:1px solid #eee}
.score{font-family:monospace;color:#555}
.rank{color:#888;min-width:1.6em;text-align:right}
.muted{color:#777;font-size:13px}
.err{color:#b00020}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
a{color:#1d5fa8}
</style></head><body>
<header><h1 id="title">contrastkit</h1><span id="subtitle" class="muted"></span>
<label class="muted">results per query <input id="k" type="number" min="1" max="100" value="10"></label></header>
<main>
<section id="search" hidden><h2>Search</h2>
<div class="row" id="index-row"><label>index <select id="index"></select></label></div>
<form id="text-form" class="row" hidden><input id="q" type="text" maxlength="1000"
 placeholder="type a text" autocomplete="off"><button id="search-btn" type="submit">Search</button></form>
<div id="drop" hidden>drop an image here, or
<input id="upload" type="file" accept="image/png,image/jpeg,image/gif,image/webp"></div>
</section>
<section id="results-box"><h2>Results</h2><div id="query" class="row"></div>
<p id="status" class="muted">loading…</p><ol id="results" class="hits"></ol></section>
<section id="gallery-box" hidden><h2>Test images <span id="gallery-count" class="muted"></span></h2>
<p class="muted">click an image to see its nearest neighbours</p>
<div id="gallery"></div><button id="more" type="button" hidden>more images</button></section>
<section id="recommend" hidden><h2>Recommendations</h2>
<form id="user-form" class="row"><input id="user" type="text" list="users" placeholder="user id"
 autocomplete="off"><datalist id="users"></datalist><button id="recommend-btn" type="submit">Show</button></form>
<p id="user-status" class="muted"></p>
<div class="cols"><div><h2>History (training items)</h2><ol id="history" class="hits"></ol></div>
<div><h2>Recommended</h2><ol id="recs" class="hits"></ol></div></div></section>
<section id="files-box" hidden><h2>Run files</h2><ul id="files"></ul></section>
</main>
<script nonce="__NONCE__">
"use strict";
const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 150;
let info = null, shown = 0;

function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children);
  return node;
}
async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({error: response.status + " " + response.statusText}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function say(id, text, bad) { const p = $(id); p.textContent = text; p.className = bad ? "err" : "muted"; }
function k() { return "k=" + encodeURIComponent($("k").value); }
function where() { return "index=" + encodeURIComponent($("index").value) + "&" + k(); }

function rows(list, hits) {
  list.replaceChildren(...hits.map((h, i) => {
    const li = el("li", {className: "hit"});
    li.dataset.name = h.name || h.text || "";
    li.append(el("span", {className: "rank", textContent: String(i + 1)}));
    if (h.score != null) li.append(el("span", {className: "score", textContent: h.score.toFixed(4)}));
    if (h.image) li.append(el("img", {className: "px", src: h.image, alt: h.name || "image"}));
    const text = el("span", {className: "text", textContent: h.text || ""});
    if (h.label != null) text.append(el("span", {className: "muted", textContent: " [" + h.label + "]"}));
    if (h.name && h.name !== h.text) text.append(el("span", {className: "muted", textContent: " " + h.name}));
    li.append(text);
    return li;
  }));
}
function showQuery(query, preview) {
  const box = $("query");
  box.replaceChildren(el("span", {className: "muted", textContent: "query:"}));
  if (preview || (query && query.image)) box.append(el("img", {className: "px", src: preview || query.image, alt: "query"}));
  if (query && (query.text || query.label)) box.append(el("span", {textContent: query.text || "[" + query.label + "]"}));
  if (query && query.name) box.append(el("span", {className: "muted", textContent: query.name}));
}
async function search(what, request, preview) {
  say("status", what + " …");
  try {
    const r = await request;
    showQuery(r.query, preview);
    rows($("results"), r.hits);
    say("status", r.hits.length + " nearest in " + r.index);
  } catch (e) {
    $("results").replaceChildren();
    say("status", e.message, true);
  }
}
function upload(file) {
  if (!file) return;
  if (file.size > info.max_upload) {
    say("status", "image too large: at most " + Math.round(info.max_upload / 1048576) + " MB", true);
    return;
  }
  const form = new FormData();
  form.append("image", file);
  search("searching with " + file.name, api("/api/search-image?" + where(), {method: "POST", body: form}),
         URL.createObjectURL(file));
}
function morePictures() {
  const g = info.gallery, end = Math.min(g.count, shown + PAGE_SIZE);
  for (let i = shown; i < end; i++) {
    const img = el("img", {className: "px", src: g.url + i, alt: "test image " + i, loading: "lazy"});
    img.title = "#" + i + (g.labels[i] != null ? " [" + g.labels[i] + "]" : "");
    img.dataset.index = i;
    img.addEventListener("click", () => {
      document.querySelectorAll("#gallery img.sel").forEach((x) => x.classList.remove("sel"));
      img.classList.add("sel");
      search("neighbours of test image " + i, api("/api/neighbours/" + i + "?" + where()));
    });
    $("gallery").append(img);
  }
  shown = end;
  $("more").hidden = shown >= g.count;
}
async function recommend(event) {
  event.preventDefault();
  const user = $("user").value.trim();
  if (!user) return;
  say("user-status", "…");
  try {
    const r = await api("/api/recommend/" + encodeURIComponent(user) + "?" + k());
    rows($("history"), r.history);
    rows($("recs"), r.recommendations);
    say("user-status", "user " + r.user + ": " + r.history_count + " training items");
  } catch (e) {
    $("history").replaceChildren();
    $("recs").replaceChildren();
    say("user-status", e.message, true);
  }
}
async function init() {
  info = await api("/api/info");
  document.title = "contrastkit · " + info.run;
  $("title").textContent = "contrastkit · " + info.run;
  $("subtitle").textContent = info.task + " run, method " + info.method;
  if (info.search) {
    $("search").hidden = false;
    for (const ix of info.search.indexes) {
      $("index").append(el("option", {value: ix.name, textContent: ix.name + " (" + ix.count + " " + ix.modality + ")"}));
    }
    $("index-row").hidden = info.search.indexes.length < 2;
    $("text-form").hidden = !info.search.modalities.includes("text");
    $("drop").hidden = !info.search.modalities.includes("image");
    $("text-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const q = $("q").value.trim();
      if (q) search("searching", api("/api/search?q=" + encodeURIComponent(q) + "&" + where()));
    });
    $("upload").addEventListener("change", (e) => upload(e.target.files[0]));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files[0]); });
  }
  if (info.gallery) {
    $("gallery-box").hidden = false;
    $("gallery-count").textContent = "(" + info.gallery.count + ", " + info.gallery.spec + ")";
    $("more").addEventListener("click", morePictures);
    morePictures();
  }
  if (info.recommend) {
    $("recommend").hidden = false;
    $("users").append(...info.recommend.sample.map((u) => el("option", {value: u})));
    say("user-status", info.recommend.users + " users");
    $("user-form").addEventListener("submit", recommend);
  }
  if (info.files.length) {
    $("files-box").hidden = false;
    const href = (f) => "/file/" + f.split("/").map(encodeURIComponent).join("/");
    $("files").append(...info.files.map((f) => el("li", {}, el("a", {href: href(f), textContent: f, target: "_blank",
                                                                       rel: "noopener"}))));
  }
  $("results-box").hidden = !(info.search || info.gallery);
  say("status", "ready");
  document.body.dataset.ready = "1";
}
init().catch((e) => say("status", e.message, true));
</script></body></html>
"""
