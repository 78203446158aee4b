// The console's only script: keeps a tenant's page live while it is not at rest, asks before a
// destructive action, and submits a filter as soon as it changes. No build step; the page works
// (without live updates) without it. The pages carry no inline script or handler: the
// Content-Security-Policy forbids them, so every behaviour lives here.
"use strict";

const POLL_MS = 1000;

function followTenant(live) {
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

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

document.addEventListener("change", (event) => {
  const field = event.target;
  if (field.form && field.hasAttribute && field.hasAttribute("data-submit-on-change")) {
    field.form.submit();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) followTenant(live);
});
