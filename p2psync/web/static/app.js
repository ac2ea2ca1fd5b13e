// What every page shares: the CSRF token on changes made by script, and live updates.
// A page marks the parts that show library data with data-live and an id; when the library
// changes (server-sent event "library"), those parts are fetched again and swapped in place,
// keeping focus and scroll. Pages add their own behaviour in their own script files.
"use strict";
const p2p = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  async function post(url, body) {
    const options = { method: "POST", headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
    if (body instanceof FormData) options.body = body;
    else if (body !== undefined) {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
    return fetch(url, options);
  }
  async function refreshLive() {
    const parts = document.querySelectorAll("[data-live][id]");
    if (!parts.length) return;
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const part of parts) {
      const replacement = fresh.getElementById(part.id);
      if (replacement && !part.contains(document.activeElement)) part.replaceWith(replacement);
    }
    document.dispatchEvent(new CustomEvent("p2p:refreshed"));
  }
  const listeners = {};
  function on(kind, handler) { (listeners[kind] ||= []).push(handler); }
  let source = null;
  function connect() {
    if (!csrf() || source) return;
    source = new EventSource("/events");
    const dispatch = (kind) => (message) => {
      const data = message.data ? JSON.parse(message.data) : {};
      for (const handler of listeners[kind] || []) handler(data);
    };
    for (const kind of ["library", "sync"]) source.addEventListener(kind, dispatch(kind));
  }
  on("library", refreshLive);
  document.addEventListener("DOMContentLoaded", connect);
  return { post, on, csrf, refreshLive };
})();
