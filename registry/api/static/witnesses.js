// QI Ledger: choose the witnesses this browser requires (kept in localStorage, per
// log key). Every key is parsed and its ID checked before it is kept, so a page's
// check never starts from a key it cannot use. notes.js is loaded first.
"use strict";

(function () {
  const notes = window.QILedgerNotes;
  const data = JSON.parse(document.getElementById("qil-witnesses").textContent);
  const messages = JSON.parse(document.getElementById("qil-messages").textContent);
  const form = document.getElementById("witness-form");
  const keysBox = document.getElementById("witness-keys");
  const minBox = document.getElementById("witness-min");
  const current = document.getElementById("witness-current");
  const result = document.getElementById("witness-result");

  const t = notes.translator(messages);

  function show() {
    const policy = notes.witnessPolicy(data.log_key);
    if (policy === null) {
      current.textContent = t("witnesses.none_required");
      current.dataset.policy = "none";
      return;
    }
    current.textContent = t("witnesses.required", { min: policy.min, count: policy.keys.length });
    current.dataset.policy = policy.min + "/" + policy.keys.length;
    keysBox.value = policy.keys.join("\n");
    minBox.value = String(policy.min);
  }

  function say(text, ok) {
    result.textContent = text;
    result.dataset.result = ok ? "ok" : "failed";
  }

  async function save() {
    const keys = Array.from(new Set(keysBox.value.split(/\s+/).filter((k) => k.length > 0)));
    if (keys.length === 0) return say(t("witnesses.no_keys"), false);
    const min = Number(minBox.value);
    if (!Number.isSafeInteger(min) || min < 1 || min > keys.length) {
      return say(t("witnesses.bad_min", { count: keys.length }), false);
    }
    try {
      for (const key of keys) await notes.parseWitnessKey(key);
    } catch (e) {
      return say(e instanceof notes.CheckFailed ? e.message : String(e), false);
    }
    notes.saveWitnessPolicy(data.log_key, { keys: keys, min: min });
    show();
    say(t("witnesses.saved"), true);
  }

  async function start() {
    if (!window.crypto || !window.crypto.subtle) return say(t("browser.no_webcrypto"), false);
    if (!(await notes.ed25519Supported())) return say(t("browser.unsupported"), false);
    form.hidden = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save();
    });
    const useDeclared = document.getElementById("witness-use-declared");
    if (useDeclared) {
      useDeclared.addEventListener("click", () => {
        keysBox.value = data.declared.join("\n");
        minBox.value = String(data.declared.length);
      });
    }
    document.getElementById("witness-clear").addEventListener("click", () => {
      notes.saveWitnessPolicy(data.log_key, null);
      keysBox.value = "";
      minBox.value = "1";
      show();
      say(t("witnesses.cleared"), true);
    });
    show();
  }

  start();
})();
