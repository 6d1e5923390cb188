// The live worklist (templates/worklist.html): times in the browser's time zone, waiting
// times kept current, and new rows without a reload.
//
// Every few seconds (data-poll-ms) it asks /worklist/rows (the page's own query) with
// If-None-Match: the server answers 304 while nothing changed, else the rows, which replace
// #worklist-rows in place: focus stays on the same control of the same study, the scroll
// position stays, and new studies are announced in the polite live region. Polling stops while
// the tab is hidden, and after data-idle-ms without a key press or pointer movement (so an
// unattended worklist does not keep the session alive past its idle timeout); any activity
// resumes it at once.
(function () {
  "use strict";

  const live = document.getElementById("worklist-live");
  const status = document.getElementById("live-status");
  if (!live || !status) return;

  const pad = (n) => String(n).padStart(2, "0");

  // Same format as xrayd.web.worklist_pages.waiting().
  function waiting(since, now) {
    let minutes = Math.max(0, Math.floor((now - since) / 60000));
    if (minutes < 60) return minutes + " min";
    let hours = Math.floor(minutes / 60);
    minutes %= 60;
    if (hours < 48) return hours + " h " + pad(minutes) + " min";
    const days = Math.floor(hours / 24);
    hours %= 24;
    return days + " d " + hours + " h";
  }

  // <time datetime="...Z" data-local>: local time (static/localtime.js, loaded by every page)
  function localise(root) {
    window.xraydLocalTime.localise(root);
    refreshWaiting(root);
  }

  function refreshWaiting(root) {
    const now = Date.now();
    root.querySelectorAll("[data-waiting-since]").forEach((el) => {
      const since = Date.parse(el.getAttribute("data-waiting-since"));
      if (!Number.isNaN(since)) el.textContent = waiting(since, now);
    });
  }

  const rowIds = (root) =>
    Array.from(root.querySelectorAll("tr[data-study-id]"), (tr) => tr.dataset.studyId);
  const seen = new Set(rowIds(live));

  // Where the focus is, as (study id, data-focus) so it can be found in the new rows.
  function focusKey() {
    const el = document.activeElement;
    if (!el || !live.contains(el)) return null;
    const row = el.closest("tr[data-study-id]");
    return row && el.dataset.focus ? { id: row.dataset.studyId, focus: el.dataset.focus } : null;
  }

  function restoreFocus(key) {
    if (!key) return;
    const row = live.querySelector('tr[data-study-id="' + CSS.escape(key.id) + '"]');
    const target = row && row.querySelector('[data-focus="' + CSS.escape(key.focus) + '"]');
    // the control is gone (the study was claimed, or left the view): keep the focus in the
    // table rather than dropping it to the document
    (target || live.querySelector("[data-focus]") || live).focus({ preventScroll: true });
  }

  function announce(text) {
    status.textContent = text;
  }

  function swap(html) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    const fresh = doc.getElementById("worklist-rows");
    const current = document.getElementById("worklist-rows");
    if (!fresh || !current) return;
    const key = focusKey();
    const x = window.scrollX;
    const y = window.scrollY;
    const node = document.importNode(fresh, true);
    current.replaceWith(node);
    localise(node);
    restoreFocus(key);
    window.scrollTo(x, y);
    const arrived = rowIds(node).filter((id) => !seen.has(id));
    arrived.forEach((id) => {
      seen.add(id);
      const row = node.querySelector('tr[data-study-id="' + CSS.escape(id) + '"]');
      if (row) row.classList.add("arrived");
    });
    const count = node.querySelector("#attention-total");
    const badge = document.getElementById("attention-count");
    if (count && badge) badge.textContent = count.dataset.count;
    if (arrived.length) {
      announce(arrived.length === 1 ? "1 new study" : arrived.length + " new studies");
    }
  }

  let timer = null;
  let busy = false;
  let stopped = false;
  let lastActivity = Date.now();
  let idlePaused = false;

  const pollMs = () => Math.max(200, Number(live.dataset.pollMs) || 5000);
  const idleMs = () => Number(live.dataset.idleMs) || 0;

  function schedule(ms) {
    clearTimeout(timer);
    timer = null;
    if (!stopped && !document.hidden && !idlePaused) timer = setTimeout(poll, ms);
  }

  async function poll() {
    timer = null;
    if (busy || stopped || document.hidden) return;
    if (idleMs() && Date.now() - lastActivity > idleMs()) {
      idlePaused = true;
      announce("Live updates paused while you are away: move the mouse or press a key to resume.");
      return;
    }
    busy = true;
    try {
      const current = document.getElementById("worklist-rows");
      const headers = { Accept: "text/html" };
      if (current && current.dataset.etag) headers["If-None-Match"] = current.dataset.etag;
      const response = await fetch(live.dataset.rowsUrl, {
        headers: headers, cache: "no-store", credentials: "same-origin", redirect: "error",
      });
      if (response.status === 401) {
        stopped = true;
        announce("Your session has ended: reload the page to log in again.");
        return;
      }
      if (response.ok) {
        swap(await response.text());
      } else {
        refreshWaiting(live);  // 304: nothing changed but the clock
      }
    } catch (err) {
      // the server is restarting or the network is down: try again at the next tick
    } finally {
      busy = false;
      schedule(pollMs());
    }
  }

  function active() {
    lastActivity = Date.now();
    if (idlePaused) {
      idlePaused = false;
      announce("");
      schedule(0);
    }
  }

  ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"].forEach((name) =>
    document.addEventListener(name, active, { passive: true }));

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else {
      schedule(0);  // back on the tab: catch up at once
    }
  });

  // A changed interval (tests shorten it) takes effect at once.
  new MutationObserver(() => schedule(pollMs())).observe(live, {
    attributes: true, attributeFilter: ["data-poll-ms"],
  });

  localise(live);
  schedule(pollMs());
})();
