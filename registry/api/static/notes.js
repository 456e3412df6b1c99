// QI Ledger: what the pages' scripts share to check C2SP signed notes in the
// browser — bytes, SHA-256, verifier keys (the log's, type 0x01, and witnesses',
// cosignature/v1 type 0x04), note signature lines and witness cosignatures
// (https://c2sp.org/signed-note, https://c2sp.org/tlog-cosignature). No library:
// Web Crypto does SHA-256 and Ed25519. Loaded before verify.js and witnesses.js.
"use strict";

window.QILedgerNotes = (function () {
  const utf8 = new TextEncoder();
  const ALG_ED25519 = 0x01;
  const ALG_COSIGNATURE_V1 = 0x04;
  const COSIGNATURE_HEADER = "cosignature/v1\n";
  const WITNESS_STORE_PREFIX = "qiledger.witnesses.v1:";
  // RFC 8032 §7.1 test 1 public key: importing it tells whether Ed25519 exists here.
  const PROBE_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

  class CheckFailed extends Error {}

  // The page's messages (its JSON block) with {name} placeholders filled in.
  function translator(messages) {
    return function (key, values) {
      let text = messages[key] || key;
      for (const name of Object.keys(values || {})) text = text.replace("{" + name + "}", values[name]);
      return text;
    };
  }

  // --- bytes ---------------------------------------------------------------------

  function b64(text, what) {
    // Standard padded base64 in its one canonical spelling, as the registry writes it.
    if (typeof text !== "string") throw new CheckFailed(what + " is missing");
    let binary;
    try {
      binary = atob(text);
    } catch (e) {
      throw new CheckFailed(what + " is not base64");
    }
    if (btoa(binary) !== text) throw new CheckFailed(what + " is not canonical base64");
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  function fromHex(text) {
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
    return out;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equal(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  function hash32(text, what) {
    const raw = b64(text, what);
    if (raw.length !== 32) throw new CheckFailed(what + " is not a 32-byte hash");
    return raw;
  }

  async function ed25519Supported() {
    try {
      await crypto.subtle.importKey("raw", fromHex(PROBE_KEY), { name: "Ed25519" }, false, [
        "verify",
      ]);
      return true;
    } catch (e) {
      return false;
    }
  }

  // --- verifier keys: name+hex8+base64(type ‖ key) ---------------------------------

  async function parseKey(vkey, type, what) {
    // The base64 may itself hold '+', so split at the first two only.
    const text = String(vkey);
    const first = text.indexOf("+");
    const second = first < 0 ? -1 : text.indexOf("+", first + 1);
    if (second < 0) throw new CheckFailed(what + " is not name+id+key");
    const name = text.slice(0, first);
    if (!name || /[\s+]/.test(name)) throw new CheckFailed(what + " has no valid name");
    const id = text.slice(first + 1, second);
    const raw = b64(text.slice(second + 1), what);
    if (raw.length !== 33 || raw[0] !== type) {
      throw new CheckFailed(
        what + (type === ALG_COSIGNATURE_V1 ? " is not a cosignature/v1 key" : " is not Ed25519"),
      );
    }
    const kid = (await sha256(concat(utf8.encode(name), Uint8Array.of(0x0a), raw))).slice(0, 4);
    if (toHex(kid) !== id) throw new CheckFailed(what + "'s ID does not match the key");
    const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, [
      "verify",
    ]);
    return { name: name, keyId: kid, key: key, text: text };
  }

  const parseVerifierKey = (vkey) => parseKey(vkey, ALG_ED25519, "the log key");
  const parseWitnessKey = (vkey) => parseKey(vkey, ALG_COSIGNATURE_V1, "the witness key " + vkey);

  // --- signed notes ------------------------------------------------------------------

  function parseNote(note) {
    if (typeof note !== "string") throw new CheckFailed("no checkpoint");
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new CheckFailed("the checkpoint has no signature block");
    const text = note.slice(0, split + 1);
    const block = note.slice(split + 2);
    if (!block.endsWith("\n")) throw new CheckFailed("the checkpoint does not end in a newline");
    const signatures = block
      .slice(0, -1)
      .split("\n")
      .map((line) => {
        if (!line.startsWith("\u2014 ")) throw new CheckFailed("malformed signature line");
        const fields = line.slice(2).split(" ");
        if (fields.length !== 2) throw new CheckFailed("malformed signature line");
        const raw = b64(fields[1], "a checkpoint signature");
        if (raw.length < 5) throw new CheckFailed("a checkpoint signature is too short");
        return { name: fields[0], keyId: raw.slice(0, 4), signature: raw.slice(4) };
      });
    return { text: text, signatures: signatures };
  }

  const signedBy = (parsed, key) =>
    parsed.signatures.filter((s) => s.name === key.name && equal(s.keyId, key.keyId));

  // A cosignature/v1 by ``witness`` on the note's text: timestamp[8] ‖ Ed25519[64],
  // over "cosignature/v1\n" "time <t>\n" and the text. True only if one verifies.
  async function cosigned(parsed, witness) {
    for (const line of signedBy(parsed, witness)) {
      if (line.signature.length !== 72) continue;
      let time = 0n;
      for (const byte of line.signature.slice(0, 8)) time = (time << 8n) | BigInt(byte);
      if (time >= 1n << 63n) continue;
      const message = utf8.encode(COSIGNATURE_HEADER + "time " + time + "\n" + parsed.text);
      const ok = await crypto.subtle.verify(
        { name: "Ed25519" },
        witness.key,
        line.signature.slice(8),
        message,
      );
      if (ok) return true;
    }
    return false;
  }

  // --- the witnesses this browser requires, per log ------------------------------------

  function witnessPolicy(logKey) {
    // { keys: [vkey…], min: K } or null: none required.
    try {
      const saved = JSON.parse(localStorage.getItem(WITNESS_STORE_PREFIX + logKey));
      if (
        saved &&
        Array.isArray(saved.keys) &&
        saved.keys.length > 0 &&
        saved.keys.every((k) => typeof k === "string") &&
        Number.isSafeInteger(saved.min) &&
        saved.min >= 1 &&
        saved.min <= saved.keys.length
      ) {
        return { keys: saved.keys, min: saved.min };
      }
    } catch (e) {
      // unreadable or disabled storage: no policy
    }
    return null;
  }

  function saveWitnessPolicy(logKey, policy) {
    if (policy === null) localStorage.removeItem(WITNESS_STORE_PREFIX + logKey);
    else localStorage.setItem(WITNESS_STORE_PREFIX + logKey, JSON.stringify(policy));
  }

  return {
    CheckFailed: CheckFailed,
    translator: translator,
    utf8: utf8,
    b64: b64,
    toHex: toHex,
    concat: concat,
    equal: equal,
    sha256: sha256,
    hash32: hash32,
    ed25519Supported: ed25519Supported,
    parseVerifierKey: parseVerifierKey,
    parseWitnessKey: parseWitnessKey,
    parseNote: parseNote,
    signedBy: signedBy,
    cosigned: cosigned,
    witnessPolicy: witnessPolicy,
    saveWitnessPolicy: saveWitnessPolicy,
  };
})();
