// edge-agent panel: live tiles over Server-Sent Events and running durations. Plain JS, no library.
// Tile HTML comes rendered (and escaped) by the agent; text that this script writes goes through
// textContent, so nothing a device or a person typed can become markup.
"use strict";
(function () {
  var offset = 0; // agent clock minus browser clock, seconds
  function agentNow() { return Date.now() / 1000 + offset; }
  function setNow(now) { if (typeof now === "number") offset = now - Date.now() / 1000; }
  setNow(parseFloat(document.body.dataset.now));

  function duration(s) {
    s = Math.max(0, Math.floor(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (h) return h + "h " + two(m) + "m";
    if (m) return m + "m " + two(sec) + "s";
    return sec + "s";
  }
  function tick() {
    var now = agentNow();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = parseFloat(el.dataset.since);
      if (!isNaN(since)) el.textContent = duration(now - since);
    });
  }
  function times(root) {
    (root || document).querySelectorAll("time[data-ts]").forEach(function (el) {
      var ts = parseFloat(el.dataset.ts);
      if (isNaN(ts)) return;
      var d = new Date(ts * 1000);
      el.dateTime = d.toISOString();
      el.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
      el.title = d.toLocaleString();
    });
  }
  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  var liveEl = document.querySelector("[data-live]");
  var badge = document.getElementById("live");
  var timelineTimer = null;
  function refreshTimeline(machine) {
    // At most once a second, when a tile changed: not a poll.
    if (timelineTimer) return;
    timelineTimer = setTimeout(function () {
      timelineTimer = null;
      fetch("/panel/machines/" + encodeURIComponent(machine) + "/timeline", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          var box = document.getElementById("timeline-box");
          if (html && box) { box.replaceChildren(fragment(html)); }
        });
    }, 1000);
  }
  if (liveEl && window.EventSource) {
    var source = new EventSource(liveEl.dataset.live);
    source.addEventListener("hello", function (e) {
      setNow(JSON.parse(e.data).now);
      if (badge) badge.hidden = true;
    });
    source.addEventListener("tile", function (e) {
      var msg = JSON.parse(e.data);
      setNow(msg.now);
      var old = document.getElementById("tile-" + msg.id);
      var next = fragment(msg.html).firstElementChild;
      if (old && next) old.replaceWith(next);
      else if (next && !liveEl.dataset.machine) liveEl.appendChild(next);
      tick();
      if (liveEl.dataset.machine === msg.id) refreshTimeline(msg.id);
    });
    source.addEventListener("tags", function (e) {
      var msg = JSON.parse(e.data);
      var body = document.getElementById("tags");
      if (body) {
        var t = document.createElement("template");
        t.innerHTML = "<table><tbody>" + msg.html + "</tbody></table>";
        body.replaceChildren.apply(body, Array.prototype.slice.call(t.content.querySelector("tbody").children));
        times(body);
      }
    });
    source.addEventListener("logout", function () { source.close(); window.location.reload(); });
    source.onerror = function () {
      // EventSource reconnects by itself; say so while it does. A 401 (session gone) ends it: reload
      // to reach the login page.
      if (badge) { badge.hidden = false; badge.textContent = "reconnecting…"; }
      if (source.readyState === EventSource.CLOSED) window.location.reload();
    };
  }
  times();
  tick();
  setInterval(tick, 1000);
})();
