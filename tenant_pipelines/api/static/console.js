// The console's only script: keeps a tenant's page live while it is not at rest, and asks
// before a destructive action. No build step; the page works (without live updates) without it.
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

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) followTenant(live);
});
