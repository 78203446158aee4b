// The console's only script: keeps a tenant's page and a batch's page live while they are not
// at rest, asks before a destructive action, and submits a filter as soon as it changes (leaving
// its empty fields out of the address). No build step; the pages work (without live updates)
// without it. The pages carry no inline script or handler: the Content-Security-Policy forbids
// them, so every behaviour lives here.
"use strict";

const POLL_MS = 1000;

// `live` names the URL of its own latest rendering; the page is at rest once that rendering
// has no "#polling" in it.
function followLive(live) {
  const url = live.dataset.liveUrl;
  async function tick() {
    if (live.dataset.atRest === "true") return;
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected || response.status === 401) {
        window.location.assign("/console/login");
        return;
      }
      if (response.ok) {
        live.innerHTML = await response.text();
        live.dataset.atRest = live.querySelector("#polling") ? "false" : "true";
      }
    } catch (error) {
      // The server is restarting or the network blinked: try again on the next tick.
    }
    if (live.dataset.atRest !== "true") window.setTimeout(tick, POLL_MS);
  }
  window.setTimeout(tick, POLL_MS);
}

// A GET form marked data-drop-empty goes to its action with only the fields given.
function goFiltered(form) {
  const given = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (value !== "") given.append(name, value);
  }
  const query = given.toString();
  window.location.assign(form.action.split("?")[0] + (query ? "?" + query : ""));
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.dataset) return;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  } else if (form.hasAttribute("data-drop-empty")) {
    event.preventDefault();
    goFiltered(form);
  }
});

document.addEventListener("change", (event) => {
  const field = event.target;
  if (!field.form || !field.hasAttribute || !field.hasAttribute("data-submit-on-change")) return;
  if (field.form.hasAttribute("data-drop-empty")) {
    goFiltered(field.form);
  } else {
    field.form.submit();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) followLive(live);
});
