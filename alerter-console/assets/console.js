// The console's progressive parts: every page works without them.
// - The overview's live part is fetched again every second (a 304 when
//   nothing changed) and swapped in, so a wall screen stays current.
// - The silence form previews which firing alerts its matchers hit, and
//   the notice form how its popup will look, as one types.
"use strict";

function debounce(fn, ms) {
  let t = null;
  return function () { clearTimeout(t); t = setTimeout(fn, ms); };
}

function live() {
  const box = document.getElementById("live");
  if (!box) return;
  const src = box.dataset.src;
  const every = parseInt(box.dataset.every || "1000", 10);
  let etag = null;
  let busy = false;
  setInterval(async function () {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const res = await fetch(src, { headers: headers, credentials: "same-origin", cache: "no-store" });
      if (res.status === 401) { window.location.reload(); return; }
      if (res.status === 200) {
        etag = res.headers.get("ETag");
        box.innerHTML = await res.text();
        box.dataset.updated = String(Date.now());
      }
    } catch (e) {
      // The daemon may be restarting: try again at the next tick.
    } finally {
      busy = false;
    }
  }, every);
}

function silencePreview() {
  const area = document.getElementById("matchers");
  const out = document.getElementById("silence-preview");
  if (!area || !out) return;
  area.addEventListener("input", debounce(async function () {
    const url = "/silences/preview?matchers=" + encodeURIComponent(area.value);
    const res = await fetch(url, { credentials: "same-origin" });
    if (res.ok) out.innerHTML = await res.text();
  }, 300));
}

function noticePreview() {
  const form = document.getElementById("notice-form");
  const out = document.getElementById("notice-preview");
  if (!form || !out) return;
  const update = debounce(async function () {
    if (!form.elements.text.value.trim()) { out.innerHTML = ""; return; }
    const body = new URLSearchParams(new FormData(form));
    body.set("action", "preview");
    const res = await fetch("/notices/preview", { method: "POST", body: body, credentials: "same-origin" });
    if (res.ok) out.innerHTML = await res.text();
  }, 300);
  form.addEventListener("input", update);
  form.addEventListener("change", update);
}

document.addEventListener("DOMContentLoaded", function () {
  live();
  silencePreview();
  noticePreview();
});
