// A reference's page: drop files anywhere on it to attach them (the form's file input and
// Attach button do the same without script).
"use strict";
(() => {
  const form = document.getElementById("upload");
  if (!form) return;
  const status = document.getElementById("upload-status");
  const say = (text, bad) => { status.textContent = text; status.classList.toggle("error", !!bad); };

  async function upload(files) {
    if (!files.length) return;
    const body = new FormData();
    for (const file of files) body.append("file", file, file.name);
    say(`Attaching ${files.length === 1 ? files[0].name : files.length + " files"}…`);
    try {
      const response = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRF-Token": p2p.csrf(), "Accept": "application/json" },
      });
      const answer = await response.json().catch(() => ({ error: `The server answered ${response.status}.` }));
      if (!response.ok) return say(answer.error || `The server answered ${response.status}.`, true);
      say(answer.attached.join(" "));
      // refreshLive keeps a part that holds the focus as it is: move the focus out of the list
      // (to the upload form the files came through) so that it shows the new attachments.
      if (document.getElementById("reference")?.contains(document.activeElement)) form.querySelector("input[type=file]").focus();
      await p2p.refreshLive();
    } catch (error) {
      say(`Could not attach: ${error.message}`, true);
    }
  }

  let depth = 0;
  const dragging = (on) => document.body.classList.toggle("dropping", on);
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  document.addEventListener("dragenter", (event) => { if (hasFiles(event)) { depth += 1; dragging(true); } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) dragging(false); });
  document.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    dragging(false);
    upload(Array.from(event.dataTransfer.files));
  });
})();
