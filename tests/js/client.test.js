// chatgw-client against a live gateway and worker (tests/js/stack.js).
//
// Run: node --experimental-websocket --test tests/js/   (Node 20; Node ≥ 22 has WebSocket built in)
// The pytest test tests/integration/test_js_client.py runs this, so `.venv/bin/pytest` covers it.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ChatgwClient, ChatgwError } from "../../gateway/static/chatgw-client/chatgw-client.js";
import { Stack, waitFor } from "./stack.js";

if (typeof WebSocket === "undefined") {
  throw new Error("no global WebSocket: run node with --experimental-websocket (Node 20) or use Node ≥ 22");
}

/** WebSocket that remembers its instances, so a test can cut the current connection. */
class TrackedWebSocket extends WebSocket {
  static instances = [];
  constructor(url) {
    super(url);
    TrackedWebSocket.instances.push(this);
  }
}

let stack;
const clients = [];

function client(user, options = {}) {
  const c = new ChatgwClient({
    url: stack.url,
    token: `dev:${user}`,
    WebSocket: TrackedWebSocket,
    initialBackoffMs: 50,
    maxBackoffMs: 500,
    ...options,
  });
  clients.push(c);
  return c;
}

/** Every event of the run in order, checked: seq 1..N contiguous, one terminal event, last. */
async function collect(run) {
  const events = [];
  for await (const event of run) events.push(event);
  assertWellFormed(events, run.afterSeq);
  return events;
}

function assertWellFormed(events, afterSeq = 0) {
  events.forEach((event, i) => assert.equal(event.seq, afterSeq + i + 1, `seq ${event.seq} at position ${i}`));
  const terminals = events.filter((e) => ["run.completed", "run.stopped", "run.failed"].includes(e.type));
  assert.equal(terminals.length, 1, "exactly one terminal event");
  assert.equal(terminals[0], events.at(-1), "the terminal event is the last one");
}

function tokensOfLastAttempt(events) {
  let text = "";
  for (const event of events) {
    if (event.type === "run.retrying") text = "";
    if (event.type === "token") text += event.text;
  }
  return text;
}

before(async () => {
  // 20 ms a token: an answer lasts a second or two, long enough to cut it in the middle.
  stack = new Stack({ CHATGW_OFFLINE_TOKEN_DELAY_MS: "20" });
  await stack.start();
});

after(async () => {
  for (const c of clients) c.close();
  await stack?.stop();
});

describe("chatgw-client", () => {
  test("chat streams the whole answer as an async iterator", async () => {
    const c = client("alice");
    await c.connect();
    assert.equal(c.state.status, "connected");
    const run = c.chat("How does resume work?");
    const accepted = await run.accepted;
    assert.equal(accepted.type, "run.accepted");
    assert.match(run.runId, /^[0-9a-f]{32}$/);
    const events = await collect(run);
    assert.equal(events[0].type, "run.started");
    const terminal = events.at(-1);
    assert.equal(terminal.type, "run.completed");
    assert.ok(terminal.content.length > 20);
    assert.equal(tokensOfLastAttempt(events), terminal.content);
    assert.equal(run.text, terminal.content);
    assert.equal(run.status, "completed");
  });

  test("onEvent callbacks see the same events, and a second turn continues the conversation", async () => {
    const c = client("bob");
    const seen = [];
    const first = c.chat("What is chatgw?", { onEvent: (event) => seen.push(event) });
    const terminal = await first.done;
    assert.deepEqual(seen, first.events);
    const second = c.chat("And stop?", { conversationId: first.conversationId });
    await second.done;
    assert.equal(second.conversationId, first.conversationId);
    assert.match(second.text, /Earlier you asked/);
    assert.notEqual(second.runId, first.runId);
    assert.equal(terminal.type, "run.completed");
  });

  test("stop keeps the partial answer", async () => {
    const c = client("carol");
    const run = c.chat("Tell me about stopping a run");
    await waitFor(() => run.events.filter((e) => e.type === "token").length >= 3, { what: "three tokens" });
    const state = await run.stop();
    assert.equal(state.type, "run.state");
    const events = await collect(run);
    const terminal = events.at(-1);
    assert.equal(terminal.type, "run.stopped");
    assert.ok(terminal.content.length > 0, "a partial answer");
    assert.equal(tokensOfLastAttempt(events), terminal.content);
    assert.equal(run.status, "stopped");
  });

  test("a socket cut mid-answer: reconnect, resume, no gap and no duplicate", async () => {
    const c = client("dave");
    await c.connect();
    const run = c.chat("How does resume work after a dropped connection?");
    await waitFor(() => run.events.filter((e) => e.type === "token").length >= 3, { what: "three tokens" });
    const cut = TrackedWebSocket.instances.at(-1);
    cut.close(); // the gateway sees the client leave; the run goes on
    const events = await collect(run);
    assert.ok(c.reconnects >= 1, "reconnected");
    assert.equal(events.at(-1).type, "run.completed");
    assert.equal(tokensOfLastAttempt(events), events.at(-1).content);
  });

  test("a gateway restart mid-answer: the answer completes exactly", async () => {
    const c = client("erin");
    await c.connect();
    const run = c.chat("What survives a gateway restart?");
    await waitFor(() => run.events.filter((e) => e.type === "token").length >= 2, { what: "two tokens" });
    await stack.gateway.stop(); // SIGTERM: sockets get 1012
    // Asked while no gateway listens: sent once the new one answers.
    const queuedWhileDown = c.chat("Asked while the gateway was down");
    await stack.startGateway();
    const events = await collect(run);
    assert.equal(events.at(-1).type, "run.completed");
    assert.equal(tokensOfLastAttempt(events), events.at(-1).content);
    assert.ok(c.closeCodes.includes(1012), `close codes: ${c.closeCodes}`);
    const later = await collect(queuedWhileDown);
    assert.equal(later.at(-1).type, "run.completed");
  });

  test("another client (a reloaded page) resumes a run from 0 or from a seq", async () => {
    const first = client("frank");
    const run = first.chat("Where do run events live?");
    await waitFor(() => run.events.length >= 4, { what: "four events" });
    const reloaded = client("frank");
    const fromStart = reloaded.resume(run.runId, 0);
    const fromThree = client("frank").resume(run.runId, 3);
    const all = await collect(fromStart);
    const rest = await collect(fromThree);
    assert.deepEqual(all.slice(3), rest);
    assert.equal(all.at(-1).content, (await run.done).content);
  });

  test("refusals come back as ChatgwError with the wire code", async () => {
    const c = client("grace");
    const first = c.chat("A question that takes a while to answer");
    await first.accepted;
    const busy = c.chat("A second one at once", { conversationId: first.conversationId });
    await assert.rejects(busy.accepted, (err) => err instanceof ChatgwError && err.code === "conversation_busy");
    await assert.rejects(busy.done, ChatgwError);
    assert.equal(busy.status, "failed");
    await assert.rejects(c.stop("0123456789abcdef0123456789abcdef"), (err) => err.code === "run_not_found");
    const gone = c.resume("0123456789abcdef0123456789abcdef");
    await assert.rejects(gone.done, (err) => err.code === "run_not_found");
    await first.done;
  });

  test("a refused token stops the client: no reconnect loop", async () => {
    const states = [];
    const c = client("x", { token: "dev:not a valid user!", onState: (s) => states.push(s.status) });
    await assert.rejects(c.connect(), (err) => err.code === "unauthorized");
    assert.equal(c.state.status, "refused");
    assert.deepEqual(c.closeCodes, [4001]);
    await assert.rejects(c.chat("hello").accepted, (err) => err.code === "unauthorized");
  });

  test("getToken is asked before every connection", async () => {
    let asked = 0;
    const c = client("henry", { token: undefined, getToken: async () => (asked++, "dev:henry") });
    await c.connect();
    TrackedWebSocket.instances.at(-1).close();
    await waitFor(() => c.reconnects >= 1 && c.state.status === "connected", { what: "reconnected" });
    assert.ok(asked >= 2);
  });

  test("the HTTP API: conversations and runs", async (t) => {
    const probe = await fetch(`${stack.http}/v1/conversations`, { headers: { Authorization: "Bearer dev:ivy" } });
    if (probe.status === 404 && !(await probe.text()).includes('"code"')) {
      t.skip("this gateway has no /v1 HTTP API");
      return;
    }
    const c = client("ivy");
    const run = c.chat("What is a conversation?");
    await run.done;
    const page = await c.listConversations({ limit: 5 });
    assert.equal(page.conversations[0].id, run.conversationId);
    const conversation = await c.getConversation(run.conversationId);
    assert.equal(conversation.turns.at(-1).answer, run.text);
    const info = await c.getRun(run.runId);
    assert.equal(info.status, "completed");
    assert.equal(info.last_seq, run.lastSeq);
    await c.deleteConversation(run.conversationId);
    await assert.rejects(c.getConversation(run.conversationId), (err) => err.status === 404);
  });
});
