// The operator console's only script (served from /console/static/; no inline script).
// It follows an app's log live: server-sent events from the URL in #log's data-follow,
// each line appended as text (never as HTML), at most MAX_LINES kept on the page.
"use strict";

(() => {
  const MAX_LINES = 5000;
  const log = document.getElementById("log");
  const state = document.getElementById("log-state");
  if (!log || !log.dataset.follow) {
    return;
  }
  const source = new EventSource(log.dataset.follow);
  const say = (text) => {
    if (state) {
      state.textContent = text;
    }
  };
  source.addEventListener("open", () => say("Following live…"));
  source.addEventListener("message", (event) => {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(document.createTextNode(event.data + "\n"));
    while (log.childNodes.length > MAX_LINES) {
      log.removeChild(log.firstChild);
    }
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  });
  source.addEventListener("end", (event) => {
    source.close();
    say(
      event.data === "signed-out"
        ? "Signed out: sign in again to follow the log."
        : "The app is no longer running: the log is complete.",
    );
  });
  source.addEventListener("error", () => say("Connection lost: reconnecting…"));
})();
