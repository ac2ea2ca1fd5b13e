// The library list: search as you type, more rows as the list scrolls, select all, and the list
// kept current when the library changes (a sync, another window). Without this file every part
// still works: the search form submits, "Next page" is a link, changes are forms that post.
"use strict";
(() => {
  const results = () => document.getElementById("results");
  let generation = 0; // answers to an older request are dropped
  let observer = null;
  let loading = false;
  const MOST_ROWS = 1000; // rows one page grows to by scrolling, however big the library

  function say(text) {
    const summary = document.getElementById("summary");
    if (summary) summary.textContent = text;
  }

  async function swapResults(url, address) {
    const mine = ++generation;
    const response = await fetch(url, { credentials: "same-origin" });
    const text = await response.text();
    if (mine !== generation) return false;
    const fresh = new DOMParser().parseFromString(text, "text/html");
    if (!response.ok) {
      say(fresh.querySelector(".error")?.textContent || "Could not load the list.");
      return false;
    }
    const part = fresh.getElementById("results");
    if (!part || !results()) return false;
    results().replaceWith(part);
    if (address) history.replaceState(null, "", address);
    enhance();
    return true;
  }

  // --- search as you type ---------------------------------------------------------------------
  function searchNow() {
    const form = document.getElementById("search-form");
    const params = new URLSearchParams(new FormData(form));
    if (!params.get("q").trim()) params.delete("q");
    const query = params.toString() ? "?" + params : "";
    return swapResults("/library/results" + query, "/" + query);
  }

  function setUpSearch() {
    const form = document.getElementById("search-form");
    const input = document.getElementById("search");
    if (!form || !input) return;
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(searchNow, 250);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(timer);
      searchNow();
    });
  }

  // --- more rows as the list scrolls ----------------------------------------------------------
  async function loadMore(link) {
    if (loading || !link.dataset.more) return;
    loading = true;
    try {
      const response = await fetch(link.dataset.more, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const data = await response.json();
      if (!response.ok) {
        say(data.error || "Could not load more references.");
        observer?.disconnect();
        return;
      }
      const rows = document.getElementById("rows");
      rows.insertAdjacentHTML("beforeend", data.rows);
      if (data.next && rows.rows.length >= MOST_ROWS) {
        // Enough for one page to hold: "Next page" goes on from here on a page of its own.
        observer.disconnect();
        link.href = data.next.replace("/library/rows", "/");
      } else if (data.next) {
        link.dataset.more = data.next;
        link.href = data.next.replace("/library/rows", "/");
        observer.unobserve(link);
        observer.observe(link); // still in view: load the next one too
      } else {
        observer.disconnect();
        link.remove();
      }
    } finally {
      loading = false;
    }
  }

  function watchMore() {
    observer?.disconnect();
    const link = document.getElementById("next-page");
    if (!link || !("IntersectionObserver" in window)) return;
    observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadMore(link);
    }, { rootMargin: "300px" });
    observer.observe(link);
  }

  function enhance() {
    const all = document.getElementById("select-all");
    if (all) all.hidden = false; // (it needs this script)
    watchMore();
  }

  // --- select all -----------------------------------------------------------------------------
  document.addEventListener("change", (event) => {
    if (event.target.id !== "select-all") return;
    for (const box of document.querySelectorAll('#rows input[name="ref"]')) box.checked = event.target.checked;
  });

  // --- the library changed: the same rows again, fresh, with the selection kept ---------------
  async function refresh() {
    const part = results();
    if (!part || loading) return;
    const shown = document.querySelectorAll("#rows tr").length;
    const url = new URL(part.dataset.results, location.href);
    if (shown > 50) url.searchParams.set("size", String(Math.min(shown, 500)));
    const checked = new Set([...document.querySelectorAll('#rows input[name="ref"]:checked')].map((box) => box.value));
    const focused = document.activeElement?.id;
    if (await swapResults(url.pathname + url.search, null)) {
      for (const box of document.querySelectorAll('#rows input[name="ref"]')) box.checked = checked.has(box.value);
      if (focused) document.getElementById(focused)?.focus();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpSearch();
    enhance();
    p2p.on("library", refresh);
  });
})();
