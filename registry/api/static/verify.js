// QI Ledger: re-check a certificate page in the browser, trusting only the log's
// public key. Checks, in order: the verifier key is well formed; the checkpoint
// (C2SP signed note) is signed by it; every history entry is in the tree under
// that checkpoint (RFC 9162 §2.1.3.2) and says what the page says; and the tree is
// an append-only extension of (or prefix of) the last one this browser saw
// (RFC 9162 §2.1.4.2), so a registry that shows different visitors different
// histories is caught; and, where this browser requires witnesses (set on the
// /witnesses page), that enough of them cosigned the checkpoint (C2SP
// tlog-cosignature). No library, no framework: Web Crypto does SHA-256 and Ed25519;
// the note and key parsing is notes.js, loaded first.
"use strict";

(function () {
  const dataNode = document.getElementById("qil-data");
  if (!dataNode) return;
  const data = JSON.parse(dataNode.textContent);
  const messages = JSON.parse(document.getElementById("qil-messages").textContent);
  const box = document.getElementById("browser-check");
  const statusLine = document.getElementById("browser-status");
  const list = document.getElementById("browser-checks");
  const notes = window.QILedgerNotes;
  const { CheckFailed, b64, concat, equal, sha256, hash32 } = notes;
  const STATEMENT_TYPE = "application/vnd.qiledger.statement+json";
  const STORE_PREFIX = "qiledger.checkpoint.v1:";

  const t = notes.translator(messages);

  const leafHash = (leafData) => sha256(concat(Uint8Array.of(0), leafData));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // --- the log's signed checkpoint (C2SP signed-note, tlog-checkpoint) -------------

  async function verifyCheckpoint(note, log) {
    const parsed = notes.parseNote(note);
    const mine = notes.signedBy(parsed, log);
    if (mine.length !== 1) throw new CheckFailed("the checkpoint is not signed by the log key");
    const ok = await crypto.subtle.verify(
      { name: "Ed25519" },
      log.key,
      mine[0].signature,
      notes.utf8.encode(parsed.text),
    );
    if (!ok) throw new CheckFailed("the log's signature on the checkpoint does not verify");
    const lines = parsed.text.slice(0, -1).split("\n");
    if (lines.length < 3) throw new CheckFailed("the checkpoint lacks origin, size or root");
    if (lines[0] !== log.name || lines[0] !== data.origin) {
      throw new CheckFailed("the checkpoint is of another log: " + lines[0]);
    }
    if (!/^(0|[1-9][0-9]{0,15})$/.test(lines[1]) || !Number.isSafeInteger(Number(lines[1]))) {
      throw new CheckFailed("the checkpoint size is not a number");
    }
    return { size: Number(lines[1]), root: hash32(lines[2], "the checkpoint root"), parsed: parsed };
  }

  // --- witnesses: K of the keys this browser requires must have cosigned ----------

  async function checkWitnesses(checkpoint, policy) {
    let valid = 0;
    const missing = [];
    for (const text of policy.keys) {
      const witness = await notes.parseWitnessKey(text);
      if (await notes.cosigned(checkpoint.parsed, witness)) valid += 1;
      else missing.push(witness.name);
    }
    if (valid < policy.min) {
      throw new CheckFailed(
        t("witness.too_few", { valid: valid, min: policy.min, missing: missing.join(", ") }),
      );
    }
    return valid;
  }

  // --- Merkle proofs (RFC 9162 §2.1.3.2, §2.1.4.2), BigInt so no 32-bit wrap -------

  async function verifyInclusion(leaf, index, size, proof, root) {
    if (!(index >= 0 && index < size)) {
      throw new CheckFailed("entry " + index + " is outside the tree of size " + size);
    }
    let fn = BigInt(index);
    let sn = BigInt(size - 1);
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) throw new CheckFailed("the inclusion proof is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new CheckFailed("the inclusion proof is too short");
    if (!equal(r, root)) throw new CheckFailed("the inclusion proof does not lead to the root");
  }

  async function verifyConsistency(first, second, proof, firstRoot, secondRoot) {
    if (first === second) {
      if (proof.length || !equal(firstRoot, secondRoot)) {
        throw new CheckFailed("two checkpoints of size " + first + " with different roots");
      }
      return;
    }
    if (!(first > 0 && first < second)) throw new CheckFailed("no consistency between these sizes");
    if (!proof.length) throw new CheckFailed("the consistency proof is empty");
    const path = proof.slice();
    if ((BigInt(first) & (BigInt(first) - 1n)) === 0n) path.unshift(firstRoot);
    let fn = BigInt(first - 1);
    let sn = BigInt(second - 1);
    while ((fn & 1n) === 1n) {
      fn >>= 1n;
      sn >>= 1n;
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0n) throw new CheckFailed("the consistency proof is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new CheckFailed("the consistency proof is too short");
    if (!equal(fr, firstRoot)) {
      throw new CheckFailed("the log's history differs from the one seen at size " + first);
    }
    if (!equal(sr, secondRoot)) throw new CheckFailed("the consistency proof does not lead to the root");
  }

  // --- the entry itself: the DSSE statement the history line stands for -----------

  function checkEntry(leafData, item) {
    let entry;
    let stmt;
    try {
      entry = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(leafData));
    } catch (e) {
      throw new CheckFailed("the entry is not JSON");
    }
    const envelope = entry && entry.envelope;
    if (!envelope || envelope.payloadType !== STATEMENT_TYPE) {
      throw new CheckFailed("the entry holds no statement envelope");
    }
    try {
      stmt = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(b64(envelope.payload, "payload")));
    } catch (e) {
      throw new CheckFailed("the entry's statement is not JSON");
    }
    if (stmt.certificate_id !== data.certificate_id) {
      throw new CheckFailed("the entry is about " + stmt.certificate_id + ", not " + data.certificate_id);
    }
    if (stmt.type !== item.type) {
      throw new CheckFailed("the entry is a " + stmt.type + ", not a " + item.type);
    }
    if (
      (stmt.type === "certificate.issue" || stmt.type === "certificate.amend") &&
      stmt.document_sha256 !== data.document_sha256
    ) {
      throw new CheckFailed("the entry names another document than the page");
    }
  }

  // --- consistency with what this browser saw before -------------------------------

  function storeKey() {
    return STORE_PREFIX + data.verifier_key;
  }

  function remembered() {
    try {
      const seen = JSON.parse(localStorage.getItem(storeKey()));
      if (seen && Number.isSafeInteger(seen.size) && seen.size > 0) {
        return { size: seen.size, root: hash32(seen.root, "the remembered root") };
      }
    } catch (e) {
      // unreadable or disabled storage: nothing seen before
    }
    return null;
  }

  function remember(checkpoint) {
    try {
      localStorage.setItem(
        storeKey(),
        JSON.stringify({ size: checkpoint.size, root: btoa(String.fromCharCode(...checkpoint.root)) }),
      );
    } catch (e) {
      // storage disabled: the next visit is a first visit again
    }
  }

  async function checkConsistency(current) {
    const seen = remembered();
    if (seen === null) {
      remember(current);
      return "first";
    }
    if (seen.size !== current.size) {
      const [older, newer] = seen.size < current.size ? [seen, current] : [current, seen];
      const url = data.consistency_url + "?first=" + older.size + "&second=" + newer.size;
      const answer = await fetch(url, { headers: { Accept: "application/json" } });
      if (!answer.ok) throw new CheckFailed("the registry gave no consistency proof (" + answer.status + ")");
      const body = await answer.json();
      if (!Array.isArray(body.hashes)) throw new CheckFailed("the consistency proof is malformed");
      const hashes = body.hashes.map((h, i) => hash32(h, "consistency proof hash " + i));
      await verifyConsistency(older.size, newer.size, hashes, older.root, newer.root);
    } else if (!equal(seen.root, current.root)) {
      throw new CheckFailed("two checkpoints of size " + seen.size + " with different roots");
    }
    if (current.size > seen.size) remember(current);
    return "ok";
  }

  // --- running and showing the checks ----------------------------------------------

  async function step(name, label, work) {
    const item = document.createElement("li");
    item.dataset.check = name;
    item.textContent = label;
    list.appendChild(item);
    try {
      const value = await work();
      item.className = "ok";
      item.dataset.result = "ok";
      return { value: value, item: item };
    } catch (e) {
      item.className = "bad";
      item.dataset.result = "failed";
      const why = document.createElement("div");
      why.className = "why";
      why.textContent = e instanceof CheckFailed ? e.message : String(e);
      item.appendChild(why);
      throw e;
    }
  }

  function finish(state, text) {
    box.dataset.state = state;
    statusLine.textContent = text;
  }

  async function run() {
    finish("running", t("browser.running"));
    if (!window.crypto || !window.crypto.subtle) {
      finish("unsupported", t("browser.no_webcrypto"));
      return;
    }
    if (!(await notes.ed25519Supported())) {
      finish("unsupported", t("browser.unsupported"));
      return;
    }
    try {
      const log = (await step("key", t("check.key"), () => notes.parseVerifierKey(data.verifier_key)))
        .value;
      const checkpoint = (
        await step("signature", t("check.signature"), () => verifyCheckpoint(data.checkpoint, log))
      ).value;
      const policy = notes.witnessPolicy(data.verifier_key);
      if (policy !== null) {
        const label = t("check.witnesses", { min: policy.min, count: policy.keys.length });
        await step("witnesses", label, () => checkWitnesses(checkpoint, policy));
      }
      for (const item of data.entries) {
        const label = t("check.inclusion", { index: item.index });
        const included = await step("inclusion-" + item.index, label, async () => {
          const leafData = b64(item.leaf_data, "entry " + item.index);
          const proof = item.proof.map((h, i) => hash32(h, "inclusion proof hash " + i));
          const leaf = await leafHash(leafData);
          await verifyInclusion(leaf, item.index, checkpoint.size, proof, checkpoint.root);
          return leafData;
        });
        const leafData = included.value;
        await step("entry-" + item.index, t("check.entry", { index: item.index }), () =>
          checkEntry(leafData, item),
        );
      }
      const consistency = await step("consistency", t("check.consistency"), () =>
        checkConsistency(checkpoint),
      );
      if (consistency.value === "first") consistency.item.textContent = t("check.first_visit");
      finish("verified", t("browser.ok"));
    } catch (e) {
      finish("failed", t("browser.failed"));
    }
  }

  run();
})();
