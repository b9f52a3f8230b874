// Reads what ants-nats wrote, and submits a task, using only the official NATS JavaScript clients
// and the wire format documented in docs/protocol.md. Usage: node interop.mjs <nats-url> <read-id> <new-id>
// Prints one JSON object: {"task": ..., "lease": ..., "event": ..., "submitted": ...}.
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";

const [url, readId, newId] = process.argv.slice(2);
const nc = await connect({ servers: url });
try {
  const kvm = new Kvm(nc);
  const tasks = await kvm.open("ants_tasks");
  const leases = await kvm.open("ants_leases");
  const routes = await kvm.open("ants_routes");
  const jsm = await jetstreamManager(nc);

  const task = (await tasks.get(readId)).json();
  // A direct claim's lease key is the holder's own: <task id>.<agent id>.
  const lease = (await leases.get(`${readId}.${task.holder}`)).json();
  const stored = await jsm.streams.getMessage("ANTS_TRAIL", {
    last_by_subj: `ants.trail.task.claimed.${readId}.*`,  // ...<author id>
  });
  const event = stored.json();

  // Submit: the record first, then the route (if new), then the ticket once it is ready.
  const spec = {
    id: newId, kind: "echo", requires: ["shout"], payload: { from: "javascript" },
    depends_on: [], priority: 0, max_attempts: 3, deadline: null, created_by: "nats.js",
  };
  const record = {
    task: spec, status: "pending", waiting_on: [], dependents: [], holder: null, token: null,
    claimed_at: null, attempts: [], result: null, error: null, unroutable: null,
    updated_at: new Date().toISOString(),
  };
  await tasks.create(newId, JSON.stringify(record));
  try {
    await routes.create("shout", JSON.stringify({ requires: ["shout"] }));
  } catch (_) {
    // the route exists already
  }
  const js = jetstream(nc);
  const ack = await js.publish("ants.work.shout", JSON.stringify({ task_id: newId, route: "shout" }), {
    msgID: `ticket-${newId}`,
  });
  console.log(JSON.stringify({ task, lease, event, submitted: ack.seq }));
} finally {
  await nc.close();
}
