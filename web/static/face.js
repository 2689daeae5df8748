// Small touches on every page, none of them needed for the page to work:
// times in the reader's own time zone and as "5 minutes ago", and a busy state while a form is being sent.
"use strict";
(function () {
  // Words in the page's language, times in the reader's own time zone.
  const language = document.documentElement.lang || "en";
  const relative = new Intl.RelativeTimeFormat(language, { numeric: "auto" });
  const local = new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" });
  const STEPS = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"], [4.345, "week"], [12, "month"],
    [Infinity, "year"]];

  function ago(date) {
    let amount = (date.getTime() - Date.now()) / 1000;
    for (const [size, unit] of STEPS) {
      if (Math.abs(amount) < size) {
        return unit === "second" && Math.abs(amount) < 45 ? "just now" : relative.format(Math.round(amount), unit);
      }
      amount /= size;
    }
    return local.format(date);
  }

  function showTimes() {
    // The server writes how long ago, from its own clock, with UTC in the title; here both use the reader's.
    for (const node of document.querySelectorAll("time[datetime]:not([data-clock])")) {
      const date = new Date(node.getAttribute("datetime"));
      if (isNaN(date.getTime())) continue;
      node.textContent = ago(date);
      node.title = local.format(date);
    }
  }

  function busy(form, submitter) {
    const button = submitter || form.querySelector("button[type=submit], button:not([type])");
    if (!button || !form.dataset.busy) return;
    // After the submit event, so the browser has already taken the form's data (and the button's) to send.
    setTimeout(() => {
      form.setAttribute("aria-busy", "true");
      button.dataset.idleText = button.textContent;
      button.textContent = form.dataset.busy;
      button.disabled = true;
    }, 0);
  }

  function idle() {
    // Coming back with the Back button shows the page as it was left: ready again.
    for (const form of document.querySelectorAll("form[aria-busy=true]")) {
      form.removeAttribute("aria-busy");
      for (const button of form.querySelectorAll("button[data-idle-text]")) {
        button.textContent = button.dataset.idleText;
        delete button.dataset.idleText;
        button.disabled = false;
      }
    }
  }

  document.addEventListener("submit", (event) => {
    if (!event.defaultPrevented) busy(event.target, event.submitter);
  });
  window.addEventListener("pageshow", (event) => { if (event.persisted) idle(); });
  showTimes();
  setInterval(showTimes, 30000);
})();
