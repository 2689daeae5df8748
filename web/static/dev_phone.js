// The dev phone page: one panel per phone, each thread updated live by polling /dev/phone/texts.
"use strict";
(function () {
  const phones = new Map(); // E.164 -> thread element
  const admins = document.getElementById("phones").dataset.admins.split(",").filter(Boolean);
  let after = 0;

  function addPhone(number, label) {
    if (phones.has(number)) return phones.get(number);
    const node = document.getElementById("phone-template").content.firstElementChild.cloneNode(true);
    node.dataset.number = number;
    node.querySelector(".label").textContent = label;
    node.querySelector(".number").textContent = number;
    const thread = node.querySelector(".thread");
    node.querySelector(".compose").addEventListener("submit", async (event) => {
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
    });
    document.getElementById("phones").appendChild(node);
    phones.set(number, thread);
    return thread;
  }

  function show(entry) {
    const thread = addPhone(entry.number, "Phone");
    const item = document.createElement("li");
    item.className = entry.direction;
    item.textContent = entry.text;
    thread.appendChild(item);
    thread.scrollTop = thread.scrollHeight;
  }

  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const response = await fetch("/dev/phone/texts?after=" + after);
      const data = await response.json();
      for (const entry of data.texts) { show(entry); after = Math.max(after, entry.id); }
    } catch (e) { /* the server may be restarting; try again on the next tick */ }
    polling = false;
  }

  document.getElementById("add-phone").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("new-number");
    const error = document.getElementById("add-error");
    const response = await fetch("/dev/phone/normalize?number=" + encodeURIComponent(input.value));
    const data = await response.json();
    if (!response.ok) { error.textContent = data.error; return; }
    error.textContent = "";
    input.value = "";
    addPhone(data.number, "Phone");
  });

  admins.forEach((number) => addPhone(number, "Admin"));
  const wanted = new URLSearchParams(location.search).get("number");
  if (wanted) fetch("/dev/phone/normalize?number=" + encodeURIComponent(wanted))
    .then((r) => r.json()).then((d) => d.number && addPhone(d.number, "Phone"));
  poll();
  setInterval(poll, 700);
})();
