// chatgw-client's bookkeeping with a scripted socket (no gateway): duplicates dropped, gaps asked
// for again, a retried attempt's text dropped, pending requests and resumes sent on reconnect.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatgwClient } from "../../gateway/static/chatgw-client/chatgw-client.js";

/** A WebSocket whose peer is the test: it records what the client sends and delivers frames. */
class ScriptedSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    ScriptedSocket.all.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = "") {
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
  deliver(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  answerHello() {
    const hello = this.sent.find((f) => f.type === "ping" && f.id.startsWith("hello-"));
    this.deliver({ type: "pong", id: hello.id });
  }
  static last() {
    return ScriptedSocket.all[ScriptedSocket.all.length - 1];
  }
}

const RUN = "r1";
const event = (seq, type, fields = {}) => ({ seq, type, run_id: RUN, conversation_id: "c1", ts: seq, ...fields });

async function connected() {
  const client = new ChatgwClient({
    url: "ws://gateway.test/ws",
    token: "dev:t",
    WebSocket: ScriptedSocket,
    initialBackoffMs: 1,
    maxBackoffMs: 2,
    keepaliveMs: 0,
  });
  const ready = client.connect();
  await new Promise((r) => setTimeout(r, 5));
  const socket = ScriptedSocket.last();
  assert.deepEqual(socket.sent[0], { type: "auth", token: "dev:t" }, "auth is the first frame");
  socket.answerHello();
  await ready;
  return { client, socket };
}

test("duplicates are dropped and a gap is asked for again", async () => {
  const { client, socket } = await connected();
  const run = client.resume(RUN, 0);
  socket.deliver(event(1, "run.started"));
  socket.deliver(event(2, "token", { text: "a " }));
  socket.deliver(event(2, "token", { text: "a " })); // duplicate
  socket.deliver(event(4, "token", { text: "c" })); // gap: 3 is missing
  assert.deepEqual(run.events.map((e) => e.seq), [1, 2]);
  assert.deepEqual(socket.sent.at(-1), { type: "resume", run_id: RUN, after_seq: 2 });
  socket.deliver(event(3, "token", { text: "b " }));
  socket.deliver(event(4, "token", { text: "c" }));
  socket.deliver(event(5, "run.completed", { content: "a b c" }));
  assert.equal(run.text, "a b c");
  assert.equal((await run.done).type, "run.completed");
  client.close();
});

test("run.retrying drops the lost attempt's text and sources", async () => {
  const { client, socket } = await connected();
  const run = client.resume(RUN, 0);
  socket.deliver(event(1, "run.started"));
  socket.deliver(event(2, "retrieval", { sources: [{ id: "s1", title: "Old", snippet: "x" }] }));
  socket.deliver(event(3, "token", { text: "lost " }));
  socket.deliver(event(4, "run.retrying", { attempt: 2, reason: "worker_lost" }));
  assert.equal(run.text, "");
  assert.deepEqual(run.sources, []);
  assert.equal(run.status, "retrying");
  socket.deliver(event(5, "run.started", { attempt: 2 }));
  socket.deliver(event(6, "retrieval", { sources: [{ id: "s2", title: "New", snippet: "y" }] }));
  socket.deliver(event(7, "token", { text: "kept" }));
  assert.equal(run.text, "kept");
  assert.equal(run.sources[0].id, "s2");
  assert.equal(run.status, "running");
  client.close();
});

test("after a reconnect: auth first, then resume from the last seq, then the unanswered requests", async () => {
  const { client, socket } = await connected();
  const followed = client.resume(RUN, 0);
  socket.deliver(event(1, "run.started"));
  socket.deliver(event(2, "token", { text: "x" }));
  const chat = client.chat("still unanswered", { id: "c-fixed", onBusy: "enqueue" });
  socket.close(1012, "gateway restarting");
  await new Promise((r) => setTimeout(r, 20));
  const next = ScriptedSocket.last();
  assert.notEqual(next, socket);
  const [auth, hello, resume, resent] = next.sent;
  assert.equal(auth.type, "auth");
  assert.equal(hello.type, "ping");
  assert.deepEqual(resume, { type: "resume", run_id: RUN, after_seq: 2 });
  assert.deepEqual(resent, { type: "chat", content: "still unanswered", id: "c-fixed", on_busy: "enqueue" });
  next.answerHello();
  next.deliver({ type: "run.accepted", id: "c-fixed", run_id: "r2", conversation_id: "c1", queued: true });
  assert.equal((await chat.accepted).run_id, "r2");
  assert.equal(chat.status, "queued");
  assert.equal(client.reconnects, 1);
  assert.deepEqual(client.closeCodes, [1012]);
  assert.equal(followed.lastSeq, 2);
  client.close();
});

test("an error frame that answers a resume ends that run's iteration with the error", async () => {
  const { client, socket } = await connected();
  const run = client.resume("gone", 0);
  socket.deliver({ type: "error", run_id: "gone", code: "run_not_found", message: "run gone not found" });
  await assert.rejects(
    (async () => {
      for await (const e of run) assert.fail(`unexpected ${e.type}`);
    })(),
    (err) => err.code === "run_not_found",
  );
  assert.equal(client.run("gone"), undefined, "no resume for it after a reconnect");
  client.close();
});
