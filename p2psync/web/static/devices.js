// Pairing pages: count the code's time down, and learn the outcome by polling the pairing's
// state; when it changes (paired, failed, a question), the page is loaded again to show it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("pairing");
  if (!box) return;
  const countdown = document.getElementById("pair-countdown");
  const shown = box.dataset.state;
  function tick() {
    if (!countdown) return;
    const left = Math.max(0, Math.round((Number(countdown.dataset.expiresAt) - Date.now()) / 1000));
    const minutes = Math.floor(left / 60), seconds = left % 60;
    countdown.textContent = minutes ? `${minutes} min ${String(seconds).padStart(2, "0")} s` : `${seconds} seconds`;
  }
  let polls = 0;
  async function poll() {
    if (++polls > 3600) return; // an hour at most
    try {
      const response = await fetch(box.dataset.pairingState, { credentials: "same-origin" });
      if (response.ok) {
        const data = await response.json();
        if (data.state !== shown) { location.reload(); return; }
      }
    } catch (error) { /* the app restarts: try again */ }
    setTimeout(poll, 1000);
  }
  tick();
  setInterval(tick, 1000);
  if (shown === "working") setTimeout(poll, 1000);
});
