// QI Ledger: check a certificate file by its SHA-256, computed here with Web Crypto,
// so the document never leaves this computer; only its digest is sent.
"use strict";

(function () {
  const messages = JSON.parse(document.getElementById("qil-messages").textContent);
  const zone = document.getElementById("drop-zone");
  const input = document.getElementById("file");
  const digestLine = document.getElementById("digest");
  const result = document.getElementById("result");
  const params = new URLSearchParams(window.location.search);
  const lang = params.get("lang");

  function pageUrl(certificateId) {
    // An id may hold '/', which the page route takes as part of the id.
    const path = "/c/" + certificateId.split("/").map(encodeURIComponent).join("/");
    return lang ? path + "?lang=" + encodeURIComponent(lang) : path;
  }

  function say(className, text) {
    result.replaceChildren();
    const p = document.createElement("p");
    p.className = "verdict " + className;
    p.id = "lookup-verdict";
    p.textContent = text;
    result.appendChild(p);
    return p;
  }

  async function check(file) {
    if (!window.crypto || !window.crypto.subtle) {
      say("warn", messages["verify.error"] + ": Web Crypto (HTTPS)");
      return;
    }
    digestLine.textContent = messages["verify.hashing"];
    result.replaceChildren();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
    const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    digestLine.textContent = "SHA-256 " + hex;
    let body;
    try {
      const answer = await fetch("/api/v1/certificates?digest=sha256:" + hex, {
        headers: { Accept: "application/json" },
      });
      if (!answer.ok) throw new Error(String(answer.status));
      body = await answer.json();
    } catch (e) {
      say("bad", messages["verify.error"] + " (" + e.message + ")");
      return;
    }
    const found = Array.isArray(body.certificates) ? body.certificates : [];
    if (found.length === 0) {
      const p = say("bad", messages["verify.unregistered"]);
      p.dataset.verdict = "unregistered";
      return;
    }
    if (found.length === 1) {
      // One certificate: its page is the answer (verdict, history, browser check).
      window.location.assign(pageUrl(found[0].certificate_id));
      return;
    }
    const p = say("ok", messages["verify.found"]);
    p.dataset.verdict = "found";
    const ul = document.createElement("ul");
    for (const cert of found) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = pageUrl(cert.certificate_id);
      a.textContent = cert.certificate_id;
      li.appendChild(a);
      const status = String(cert.status || "").toLowerCase();
      li.appendChild(document.createTextNode(" — " + (messages["verdict." + status] || status)));
      ul.appendChild(li);
    }
    result.appendChild(ul);
  }

  zone.hidden = false;
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) check(input.files[0]);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) check(file);
  });
})();
