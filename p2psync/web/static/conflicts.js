// Sync Conflicts: typing a new value chooses it (the radio beside it), so the keyboard user
// types and submits without an extra step. The form works the same without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[data-choose]")) {
    input.addEventListener("input", () => {
      const radio = document.getElementById(input.dataset.choose);
      if (radio) radio.checked = true;
    });
  }
});
