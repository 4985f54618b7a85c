// Live parts of pages: every element with data-live="URL" is refreshed from that URL, which
// answers {"html": {"element id": "markup"}}. No framework, no build step.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh-ms"), 10) || 5000;
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
  if (!regions.length) return;
  var busy = false;

  function apply(data) {
    var html = (data && data.html) || {};
    Object.keys(html).forEach(function (id) {
      var target = document.getElementById(id);
      if (target) target.innerHTML = html[id];
    });
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    var pending = regions.length;
    regions.forEach(function (el) {
      fetch(el.getAttribute("data-live"), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      })
        .then(function (r) {
          if (r.status === 401) {
            window.location.reload(); // the session ended: back to the login page
            throw new Error("logged out");
          }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (data) {
          apply(data);
          body.classList.remove("stale");
        })
        .catch(function () {
          body.classList.add("stale");
        })
        .then(function () {
          pending -= 1;
          if (pending === 0) busy = false;
        });
    });
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();
