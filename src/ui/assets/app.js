// siptrack console: live rows. A table body marked data-live="lead" or
// "call" listens to /ui/events for rows newer than data-after and puts
// them on top. The rows come rendered and escaped by the server.
(function () {
  "use strict";
  var body = document.querySelector("tbody[data-live]");
  if (!body || !window.EventSource) {
    return;
  }
  var kind = body.getAttribute("data-live");
  var after = body.getAttribute("data-after") || "0";
  var events = new EventSource("/ui/events?" + kind + "=" + encodeURIComponent(after));
  events.addEventListener(kind, function (e) {
    body.insertAdjacentHTML("afterbegin", e.data);
    var empty = document.querySelector("p.empty");
    if (empty) {
      empty.parentNode.removeChild(empty);
    }
  });
  var signIn = function () {
    events.close();
    window.location.href = "/ui/login?next=" +
      encodeURIComponent(window.location.pathname + window.location.search);
  };
  events.addEventListener("signed-out", signIn);
  // A refused reconnect (401 once the session is gone) closes the stream
  // for good; network errors only make it retry.
  events.addEventListener("error", function () {
    if (events.readyState === EventSource.CLOSED) {
      signIn();
    }
  });
})();
