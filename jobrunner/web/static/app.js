// jobrunner dashboard: refreshes the live fragments, sends the forms and buttons to the API.
// Every request it makes that changes something carries X-Jobrunner-Request: 1 (the server's CSRF rule).
"use strict";
(function () {
  const HEADER = { "X-Jobrunner-Request": "1" };
  const every = Number(document.body.dataset.refreshMs) || 2000;
  const toggle = document.getElementById("auto-refresh");
  const KEY = "jobrunner.autoRefresh";

  if (toggle) {
    toggle.checked = localStorage.getItem(KEY) !== "off";
    toggle.addEventListener("change", () => localStorage.setItem(KEY, toggle.checked ? "on" : "off"));
  }
  const on = () => !toggle || toggle.checked;

  let busy = false;
  async function refresh() {
    if (busy || !on() || document.hidden) return;
    busy = true;
    try {
      for (const el of document.querySelectorAll("[data-refresh]")) {
        const answer = await fetch(el.dataset.refresh, { headers: HEADER, credentials: "same-origin" });
        if (answer.status === 401 || answer.redirected) { location.reload(); return; }
        if (!answer.ok) continue;
        const html = await answer.text();
        const box = document.createElement("div");
        box.innerHTML = html;
        const fresh = box.firstElementChild;
        if (fresh && fresh.id === el.id) el.replaceWith(fresh);
      }
    } catch (err) {
      // the server is restarting, or the network is gone: try again at the next tick
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);

  function say(out, text, good) {
    if (!out) return;
    out.textContent = text;
    out.className = "form-result " + (good ? "ok" : "bad");
  }

  function jsonOf(form) {
    const body = { searchParams: {} };
    for (const [name, value] of new FormData(form).entries()) {
      if (value === "") continue;
      if (name === "maxPages" || name === "maxResults") body[name] = Number(value);
      else body.searchParams[name] = value;
    }
    return body;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.matches("form.api-form")) return;
    event.preventDefault();
    const out = form.querySelector(".form-result");
    const button = form.querySelector("button[type=submit]");
    const init = { method: "POST", credentials: "same-origin", headers: { ...HEADER } };
    if (form.dataset.multipart) {
      init.body = new FormData(form);
    } else {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(jsonOf(form));
    }
    button.disabled = true;
    say(out, "submitting…", true);
    try {
      const answer = await fetch(form.dataset.api, init);
      const body = await answer.json().catch(() => ({ error: answer.statusText }));
      if (answer.ok && body.success) {
        say(out, "submitted: " + body.jobId, true);
        const link = document.createElement("a");
        link.href = "/jobs/" + encodeURIComponent(body.jobId);
        link.textContent = " open it";
        link.id = "submitted-link";
        out.appendChild(link);
        refresh();
      } else {
        say(out, body.error || ("refused: " + answer.status), false);
      }
    } catch (err) {
      say(out, "could not reach the server", false);
    } finally {
      button.disabled = false;
    }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-post]");
    if (!button) return;
    event.preventDefault();
    button.disabled = true;
    const out = document.getElementById("action-result");
    const init = { method: "POST", credentials: "same-origin", headers: { ...HEADER } };
    if (button.dataset.json) {
      init.headers["Content-Type"] = "application/json";
      init.body = button.dataset.json;
    }
    try {
      const answer = await fetch(button.dataset.post, init);
      const body = await answer.json().catch(() => ({ error: answer.statusText }));
      if (answer.ok && body.success && button.dataset.then === "open") {
        location.assign("/jobs/" + encodeURIComponent(body.jobId));
      } else if (answer.ok && body.success) {
        say(out, body.jobId + ": " + body.status, true);
        setTimeout(() => location.reload(), 300);
      } else {
        say(out, body.error || ("refused: " + answer.status), false);
        button.disabled = false;
      }
    } catch (err) {
      say(out, "could not reach the server", false);
      button.disabled = false;
    }
  });
})();
