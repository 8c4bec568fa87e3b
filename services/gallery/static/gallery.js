// Live progress (server-sent events from the jobs API's Watch) and image zoom.
// Plain JavaScript, served by the gallery itself: no build step, no CDN.
(function () {
  "use strict";

  // Once a form is submitted the page is on its way out: a reload now would race the
  // submission (and could send it again), so live updates stop.
  var sources = [];
  var leaving = false;

  function watch(el) {
    var id = el.getAttribute("data-watch");
    var initial = el.getAttribute("data-reload-on-change");
    var source = new EventSource("/jobs/" + encodeURIComponent(id) + "/events");
    sources.push(source);
    function set(field, value) {
      var node = el.querySelector('[data-field="' + field + '"]');
      if (!node) return;
      if (field === "progress") node.value = value; else node.textContent = value;
    }
    source.addEventListener("update", function (e) {
      var d = JSON.parse(e.data);
      set("state", d.state);
      set("percent", d.percent + "%");
      set("progress", d.percent);
      set("message", d.message || d.stage);
      var state = el.querySelector('[data-field="state"]');
      if (state) state.className = "state state-" + d.state.replace(/ /g, "-");
      // The portrait page shows other images and forms in another state: load them.
      var version = el.getAttribute("data-version");
      var changed = d.state !== initial || (version !== null && String(d.version) !== version);
      if (initial !== null && changed && !leaving) {
        source.close();
        // A plain GET of this page (never a re-sent form).
        window.location.replace("/jobs/" + encodeURIComponent(id));
      }
      if (d.terminal) source.close();
    });
    source.addEventListener("end", function () { source.close(); });
    source.addEventListener("failure", function () { source.close(); });
  }

  function zoom(button) {
    var box = button.parentElement.querySelector(".zoombox");
    var img = box.querySelector("img");
    function toggle() {
      var on = !box.classList.contains("zoomed");
      if (on && img.getAttribute("data-full") && img.src.indexOf("size=") !== -1) img.src = img.getAttribute("data-full");
      box.classList.toggle("zoomed", on);
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.textContent = on ? "Fit" : "Zoom";
    }
    button.addEventListener("click", toggle);
    img.addEventListener("click", toggle);
  }

  document.addEventListener("submit", function () {
    leaving = true;
    sources.forEach(function (s) { s.close(); });
  });

  document.addEventListener("DOMContentLoaded", function () {
    // One stream per unfinished job on the page, at most 12 (browsers cap open connections).
    Array.prototype.slice.call(document.querySelectorAll("[data-watch]"), 0, 12).forEach(watch);
    document.querySelectorAll("[data-zoom]").forEach(zoom);
  });
})();
