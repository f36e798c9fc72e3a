// tailor dashboard: every element with data-live is fetched again from
// its URL every data-every milliseconds and replaced (the server renders
// the HTML); bars get their widths from data-w. No library.
"use strict";
(function () {
  function bars(root) {
    root.querySelectorAll("[data-w]").forEach(function (el) {
      el.style.width = el.getAttribute("data-w") + "%";
    });
  }
  function live(el) {
    var url = el.getAttribute("data-live");
    var every = parseInt(el.getAttribute("data-every"), 10) || 1000;
    var busy = false;
    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { headers: { "X-Requested-With": "fetch" }, cache: "no-store" })
        .then(function (r) {
          if (!r.ok) throw new Error(r.status + " " + r.statusText);
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          bars(el);
          el.removeAttribute("data-offline");
          document.body.setAttribute("data-updated", String(Date.now()));
        })
        .catch(function (e) {
          el.setAttribute("data-offline", String(e));
        })
        .finally(function () { busy = false; });
    }
    setInterval(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    bars(document);
    document.querySelectorAll("[data-live]").forEach(live);
  });
})();
