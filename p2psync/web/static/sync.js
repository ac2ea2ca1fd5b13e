// Sync Status: "Sync now" without leaving the page, and the round's progress as it goes.
// The server sends "sync" events (p2psync/web/sync_pages.py): started, planned, peer, attachments,
// bytes, relay, finished. Each line goes into the live region (read out by screen readers), the
// <progress> follows the steps (and the attachment bytes while they arrive).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  function setState(text, state, ok) {
    const line = $("sync-state");
    if (!line) return;
    line.textContent = text;
    line.dataset.state = state;
    line.classList.toggle("error", ok === false);
  }
  function addLine(text, ok) {
    const list = $("sync-log");
    if (!list || !text) return;
    const item = document.createElement("li");
    item.textContent = text;
    if (ok === false) item.className = "error";
    list.appendChild(item);
  }
  function progress(done, total) {
    const bar = $("sync-progress");
    if (!bar || !total) return;
    bar.max = total;
    bar.value = Math.min(done, total);
    bar.textContent = `${done} of ${total}`;
  }
  p2p.on("sync", (event) => {
    const button = $("sync-button");
    switch (event.step) {
      case "started":
        $("sync-log").replaceChildren();
        setState("A sync is running…", "running");
        if (button) button.disabled = true;
        addLine(event.text, true);
        progress(0, 1);
        break;
      case "bytes":
        if (event.bytes_total) progress(event.bytes, event.bytes_total);
        setState(`Fetching attachments: ${(event.bytes / 1e6).toFixed(1)} of ${(event.bytes_total / 1e6).toFixed(1)} MB…`, "running");
        break;
      case "finished":
        progress(1, 1);
        setState(event.text, "done", event.ok);
        if (button) button.disabled = false;
        break;
      default:
        addLine(event.text, event.ok);
        progress(event.done, event.total);
    }
  });
  document.addEventListener("DOMContentLoaded", () => {
    const form = $("sync-form");
    if (!form) return;
    form.addEventListener("submit", async (submit) => {
      submit.preventDefault();
      const response = await fetch("/sync", {
        method: "POST",
        headers: { "X-CSRF-Token": p2p.csrf(), Accept: "application/json" },
        credentials: "same-origin",
      });
      const answer = await response.json().catch(() => ({ message: "The app did not answer; is it still running?" }));
      if (!response.ok) setState(answer.message || answer.error, "busy", false);
    });
  });
})();
