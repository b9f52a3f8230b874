// An agent written with the official NATS JavaScript clients signs trail events the way docs/protocol.md
// ("Trust", "Wire format") says any language may: its own JSON, an ed25519 signature (@nats-io/nkeys)
// over `subject + "\n" + payload` in headers Ants-Signer / Ants-Sig. It also checks a signature
// ants-nats (Python) made, with nothing but those rules.
//
// Usage: ANTS_SEED=SU... node sign.mjs <nats-url> <agent-id> <python-subject>
// Prints one JSON object: {"public_key": ..., "laid": {<ref>: <seq>}, "python": {...}}.
import { connect, headers } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { createUser, fromPublic, fromSeed } from "@nats-io/nkeys";

const [url, agent, pythonSubject] = process.argv.slice(2);
const me = fromSeed(new TextEncoder().encode(process.env.ANTS_SEED));
const publicKey = me.getPublicKey();
const encoder = new TextEncoder();

/** The bytes a signature covers: the subject, one newline, the payload exactly as published. */
function signingInput(subject, payload) {
  return Buffer.concat([Buffer.from(`${subject}\n`, "utf8"), Buffer.from(payload)]);
}

function signed(key, subject, payload, padded = false) {
  const sig = Buffer.from(key.sign(signingInput(subject, payload)));
  const h = headers();
  h.set("Ants-Signer", key.getPublicKey());
  // base64url without padding is what docs/protocol.md specifies; readers accept it padded too.
  h.set("Ants-Sig", padded ? sig.toString("base64url") + "==" : sig.toString("base64url"));
  return h;
}

/** A mark as this client serialises it: its own key order, millisecond timestamps, 1 for 1.0. */
function mark(ref, data, extra = {}) {
  const event = {
    by: agent, kind: "mark.interop.signed", ref, agent, at: new Date().toISOString(), intensity: 1.0, data,
    ...extra,
  };
  return { subject: `ants.trail.mark.interop.signed.${ref}.${agent}`, payload: encoder.encode(JSON.stringify(event)) };
}

const nc = await connect({ servers: url });
try {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const kvm = new Kvm(nc);

  // Announce a card carrying the public key, as an ants-nats agent does (ants_agents/<id>).
  const agents = await kvm.open("ants_agents");
  await agents.put(agent, JSON.stringify({
    id: agent, name: "nats.js signer", load: 0, capacity: 1, software: "nats.js",
    heartbeat_at: new Date().toISOString(), public_key: publicKey,
  }));

  const laid = {};
  const lay = async (ref, subject, payload, h) => {
    laid[ref] = (await js.publish(subject, payload, { headers: h })).seq;
  };

  // 1. Genuine: signed as published.
  let m = mark("js-signed", { lang: "javascript", ratio: 1.0, nested: { b: 2, a: 1 } });
  await lay("js-signed", m.subject, m.payload, signed(me, m.subject, m.payload));
  // 2. Genuine, its signature padded.
  m = mark("js-padded", { lang: "javascript" });
  await lay("js-padded", m.subject, m.payload, signed(me, m.subject, m.payload, true));
  // 3. Tampered: the payload changed after it was signed.
  m = mark("js-tampered", { amount: 1 });
  const original = signed(me, m.subject, m.payload);
  const tampered = encoder.encode(new TextDecoder().decode(m.payload).replace('"amount":1', '"amount":100'));
  await lay("js-tampered", m.subject, tampered, original);
  // 4. A signer that left the subject out: the signature covers the payload alone.
  m = mark("js-payload-only", { lang: "javascript" });
  const h = headers();
  h.set("Ants-Signer", publicKey);
  h.set("Ants-Sig", Buffer.from(me.sign(m.payload)).toString("base64url"));
  await lay("js-payload-only", m.subject, m.payload, h);
  // 5. An impostor: a valid signature, by a key that is not on the author's card.
  m = mark("js-impostor", { lang: "javascript" });
  await lay("js-impostor", m.subject, m.payload, signed(createUser(), m.subject, m.payload));
  // 6. Headers and the deprecated body fields: the headers rule, and must agree on the signer.
  m = mark("js-body-agrees", {}, { signer: publicKey, sig: "not-checked-the-header-rules" });
  await lay("js-body-agrees", m.subject, m.payload, signed(me, m.subject, m.payload));
  m = mark("js-body-disagrees", {}, { signer: createUser().getPublicKey() });
  await lay("js-body-disagrees", m.subject, m.payload, signed(me, m.subject, m.payload));

  // Check a signature made by ants-nats (Python) with nothing but the documented rules.
  const stored = await jsm.streams.getMessage("ANTS_TRAIL", { last_by_subj: pythonSubject });
  const signer = stored.header.get("Ants-Signer");
  const sig = Buffer.from(stored.header.get("Ants-Sig"), "base64url");
  const python = {
    signer,
    verified: fromPublic(signer).verify(signingInput(stored.subject, stored.data), sig),
    altered: fromPublic(signer).verify(signingInput(stored.subject, encoder.encode(" ")), sig),
    body_has_sig: "sig" in stored.json() || "signer" in stored.json(),
  };
  console.log(JSON.stringify({ public_key: publicKey, laid, python }));
} finally {
  await nc.close();
}
