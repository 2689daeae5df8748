// The dev phone page: one panel per phone, kept by the server (so a reload shows the same phones in the same
// order), each thread updated live by polling /dev/phone/texts.
"use strict";
(function () {
  const container = document.getElementById("phones");
  const template = document.getElementById("phone-template");
  const panels = new Map(); // E.164 -> {node, thread, label}
  const clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const LINK = /https?:\/\/[^\s]+[^\s.,;:!?)'"]/g;
  let after = 0;
  let serial = 0;
  // A thread shows its newest texts, also when the window (and so each text's height) changes.
  const sticky = new ResizeObserver((entries) => {
    for (const entry of entries) entry.target.scrollTop = entry.target.scrollHeight;
  });

  function panel(phone) {
    let known = panels.get(phone.number);
    if (!known) {
      const node = template.content.firstElementChild.cloneNode(true);
      const id = "compose-" + (++serial);
      node.dataset.number = phone.number;
      node.querySelector(".number").textContent = phone.shown;
      node.querySelector(".compose label").htmlFor = id;
      node.querySelector(".compose input").id = id;
      node.querySelector(".compose").addEventListener("submit", (event) => send(event, phone.number));
      container.appendChild(node);
      known = { node: node, thread: node.querySelector(".thread") };
      sticky.observe(known.thread);
      panels.set(phone.number, known);
    }
    known.node.querySelector(".label").textContent = phone.label;
    known.node.setAttribute("aria-label", phone.label + ", " + phone.shown);
    known.node.querySelector(".compose label").textContent = "Text from " + phone.label;
    return known;
  }

  async function send(event, number) {
    event.preventDefault();
    const input = event.target.elements.text;
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    await fetch("/dev/phone/send", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ from: number, text: text }),
    });
    poll();
  }

  function withLinks(paragraph, text) {
    // Built as text and elements, never as HTML: a text can say anything.
    let last = 0;
    for (const match of text.matchAll(LINK)) {
      paragraph.append(text.slice(last, match.index));
      const link = document.createElement("a");
      link.href = match[0];
      link.textContent = match[0];
      link.target = "_blank";
      link.rel = "noopener";
      paragraph.append(link);
      last = match.index + match[0].length;
    }
    paragraph.append(text.slice(last));
  }

  async function copy(button, value) {
    try {
      await navigator.clipboard.writeText(value);
    } catch (e) {
      const scratch = document.createElement("textarea"); // no clipboard API (not a secure context): the old way
      scratch.value = value;
      document.body.appendChild(scratch);
      scratch.select();
      document.execCommand("copy");
      scratch.remove();
    }
    const before = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = before; }, 1500);
  }

  function copyButtons(item, entry) {
    if (!entry.copy.length) return;
    const row = document.createElement("div");
    row.className = "copies";
    for (const found of entry.copy) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary copy";
      button.dataset.copy = found.value;
      button.textContent = found.what === "reply" ? "Copy " + found.value : "Copy " + found.what;
      button.setAttribute("aria-label", button.textContent + (found.what === "reply" ? "" : " " + found.value));
      button.addEventListener("click", () => copy(button, found.value));
      row.appendChild(button);
    }
    item.appendChild(row);
  }

  function show(entry) {
    const known = panels.get(entry.number) || panel({ number: entry.number, shown: entry.number, label: "Phone" });
    const empty = known.thread.querySelector(".empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = entry.direction;
    const body = document.createElement("p");
    body.className = "body";
    withLinks(body, entry.text);
    item.appendChild(body);
    copyButtons(item, entry);
    const at = new Date(entry.at * 1000);
    const time = document.createElement("time");
    time.dateTime = at.toISOString();
    time.dataset.clock = "";
    time.textContent = clock.format(at);
    time.title = at.toLocaleString();
    item.appendChild(time);
    known.thread.appendChild(item);
    known.thread.scrollTop = known.thread.scrollHeight;
  }

  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const response = await fetch("/dev/phone/texts?after=" + after);
      const data = await response.json();
      data.phones.forEach(panel); // in the server's order, which only ever grows at the end
      for (const entry of data.texts) { show(entry); after = Math.max(after, entry.id); }
    } catch (e) { /* the server may be restarting; try again on the next tick */ }
    polling = false;
  }

  function point(number) {
    const known = panels.get(number);
    if (!known) return;
    known.node.scrollIntoView({ block: "nearest" });
    known.node.classList.add("flash");
    setTimeout(() => known.node.classList.remove("flash"), 2000);
    known.node.querySelector(".compose input").focus({ preventScroll: true });
  }

  document.getElementById("add-phone").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("new-number");
    const status = document.getElementById("add-status");
    const error = document.getElementById("add-error");
    status.textContent = "";
    error.textContent = "";
    let data;
    let ok = false;
    try {
      const response = await fetch("/dev/phone/phones", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ number: input.value }),
      });
      data = await response.json();
      ok = response.ok;
    } catch (e) {
      data = { error: "The dev server didn't answer. Is smsbot dev still running?" };
    }
    if (!ok) { error.textContent = data.error; return; }
    input.value = "";
    panel(data);
    status.textContent = data.new ? "Added " + data.shown + ": type a text in its panel below." :
      data.shown + " is already here, as " + data.label + ".";
    point(data.number);
  });

  poll();
  setInterval(poll, 700);
})();
