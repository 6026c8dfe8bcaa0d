// chatgw-client: a WebSocket client for chatgw that never shows its application a reconnect.
//
// It authenticates with an `auth` first frame (browsers cannot set headers on a WebSocket),
// reconnects with jittered exponential backoff, resumes every run it follows from the last seq it
// saw and drops duplicates, so each run's events arrive complete, in order, once. Requests still
// unanswered when a connection drops are sent again on the next one (a chat with the same id and
// content is the same chat to the gateway; stop is idempotent). Same semantics as the Python
// ResilientClient (client/resilient.py). Protocol: docs/protocol.md; types: chatgw-client.d.ts.

export const TERMINAL_TYPES = Object.freeze(["run.completed", "run.stopped", "run.failed"]);
const TERMINAL = new Set(TERMINAL_TYPES);
// 4001: the token was refused; the same token cannot do better. 4003 (expired) is fatal only when
// there is no getToken to ask for a fresh one. Every other close reconnects and resumes.
const CLOSE_UNAUTHORIZED = 4001;
const CLOSE_TOKEN_EXPIRED = 4003;
const OPEN = 1;

/** An error from the gateway (`code` is the wire error code) or from the client itself. */
export class ChatgwError extends Error {
  constructor(message, code = "client_error", frame = null) {
    super(message);
    this.name = "ChatgwError";
    this.code = code;
    this.frame = frame;
    this.retryAfterMs = frame && typeof frame.retry_after_ms === "number" ? frame.retry_after_ms : null;
  }
}

function ignore() {}

function randomRef(prefix) {
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(ignore); // nobody has to await it: no unhandled rejection
  return { promise, resolve, reject };
}

/** A run this client follows: its events so far, the answer of its current attempt, its end. */
export class Run {
  constructor(client, runId = null, afterSeq = 0) {
    this._client = client;
    this.runId = runId;
    this.conversationId = null;
    this.afterSeq = afterSeq; // events up to this seq were seen elsewhere (e.g. before a reload)
    this.events = [];
    this.queued = false;
    this.error = null; // a ChatgwError when the run cannot be followed (refused chat, run_not_found)
    this._accepted = deferred();
    this._done = deferred();
    this._listeners = new Set();
    this._wakers = [];
    if (runId !== null) this._accepted.resolve(null);
  }

  /** Resolves with the run.accepted frame (null for a run followed with resume); rejects with a
   * ChatgwError when the gateway refused the chat. */
  get accepted() {
    return this._accepted.promise;
  }

  /** Resolves with the terminal event; rejects when the run cannot be followed. */
  get done() {
    return this._done.promise;
  }

  get lastSeq() {
    return this.events.length ? this.events[this.events.length - 1].seq : this.afterSeq;
  }

  get terminal() {
    const last = this.events[this.events.length - 1];
    return last && TERMINAL.has(last.type) ? last : null;
  }

  /** queued | running | retrying | completed | stopped | failed (pending before run.accepted). */
  get status() {
    if (this.error) return "failed";
    const terminal = this.terminal;
    if (terminal) return terminal.type.slice("run.".length);
    if (this.runId === null) return "pending";
    const last = this.events[this.events.length - 1];
    if (last) return last.type === "run.retrying" ? "retrying" : "running";
    return this.afterSeq ? "running" : "queued"; // accepted, no worker on it yet
  }

  /** The events of the current attempt: a run.retrying discards everything before it. */
  get attemptEvents() {
    let start = 0;
    this.events.forEach((event, i) => {
      if (event.type === "run.retrying") start = i + 1;
    });
    return this.events.slice(start);
  }

  /** The answer so far (the terminal event's content once there is one: it is authoritative). */
  get text() {
    const terminal = this.terminal;
    if (terminal && typeof terminal.content === "string") return terminal.content;
    let text = "";
    for (const event of this.attemptEvents) if (event.type === "token") text += event.text;
    return text;
  }

  /** The sources of the current attempt's retrieval event, if any. */
  get sources() {
    const retrieval = this.attemptEvents.find((event) => event.type === "retrieval");
    return retrieval ? retrieval.sources : [];
  }

  /** Call `listener(event, run)` for every event received so far, then for each new one. Returns
   * a function that unsubscribes. Listener errors are reported, never thrown into the client. */
  onEvent(listener) {
    this._listeners.add(listener);
    for (const event of this.events) this._call(listener, event);
    return () => this._listeners.delete(listener);
  }

  stop() {
    if (this.runId === null) return this.accepted.then((accepted) => this._client.stop(accepted.run_id));
    return this._client.stop(this.runId);
  }

  async *[Symbol.asyncIterator]() {
    await this.accepted;
    let index = 0;
    while (true) {
      while (index < this.events.length) {
        const event = this.events[index++];
        yield event;
        if (TERMINAL.has(event.type)) return;
      }
      if (this.error) throw this.error;
      await new Promise((wake) => this._wakers.push(wake));
    }
  }

  // ------------------------------------------------------------------ fed by the client

  _accept(frame) {
    this.runId = frame.run_id;
    this.conversationId = frame.conversation_id;
    this.queued = Boolean(frame.queued);
    this._accepted.resolve(frame);
  }

  _push(event) {
    this.conversationId = this.conversationId || event.conversation_id;
    this.events.push(event);
    for (const listener of this._listeners) this._call(listener, event);
    if (TERMINAL.has(event.type)) this._done.resolve(event);
    this._wake();
  }

  _fail(error) {
    if (this.terminal || this.error) return;
    this.error = error;
    this._accepted.reject(error);
    this._done.reject(error);
    for (const listener of this._listeners) this._call(listener, null);
    this._wake();
  }

  _call(listener, event) {
    try {
      listener(event, this);
    } catch (err) {
      this._client._report(err);
    }
  }

  _wake() {
    for (const wake of this._wakers.splice(0)) wake();
  }
}

/**
 * One logical connection to chatgw over any number of WebSockets in a row.
 *
 * Options: url (or urls, tried in turn), token (or getToken, called before every connection),
 * httpUrl (for the HTTP API; default: derived from the first url), WebSocket (an implementation,
 * default globalThis.WebSocket), fetch, initialBackoffMs, maxBackoffMs, connectTimeoutMs,
 * replyTimeoutMs, keepaliveMs, onState(state), onNotice(errorFrame).
 */
export class ChatgwClient {
  constructor(options = {}) {
    const urls = options.urls || (options.url ? [options.url] : []);
    if (!urls.length) throw new TypeError("chatgw-client: a gateway url (or urls) is needed");
    if (options.token === undefined && !options.getToken) throw new TypeError("chatgw-client: token or getToken is needed");
    this._urls = urls.slice();
    this._urlIndex = 0;
    this._token = options.token;
    this._getToken = options.getToken || null;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this._WebSocket) throw new TypeError("chatgw-client: no WebSocket implementation (pass options.WebSocket)");
    this._fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this.httpUrl = (options.httpUrl || httpBase(urls[0])).replace(/\/+$/, "");
    this._initialBackoffMs = options.initialBackoffMs ?? 100;
    this._maxBackoffMs = options.maxBackoffMs ?? 5000;
    this._connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    this._replyTimeoutMs = options.replyTimeoutMs ?? 15000;
    this._keepaliveMs = options.keepaliveMs ?? 30000;
    this._onState = options.onState || ignore;
    this._onNotice = options.onNotice || ignore;
    this.runs = new Map();
    this.state = { status: "idle", url: this._urls[0] };
    this.reconnects = 0;
    this.closeCodes = [];
    this._pending = new Map(); // id -> {frame, resolve, reject, run, timer}
    this._ws = null;
    this._supervisor = null;
    this._closed = false;
    this._fatal = null;
    this._connected = deferred();
    this._wakeBackoff = null;
    this._lastFrameAt = 0;
    this._keepalive = null;
    this._helloResuming = 0;
  }

  /** Start connecting; resolves once the gateway has answered on an authenticated socket, rejects
   * when the token is refused. Idempotent; call it again after a refusal to try a new token. */
  connect() {
    if (this._closed) return Promise.reject(new ChatgwError("the client is closed", "closed"));
    if (this._fatal) {
      this._fatal = null;
      this._connected = deferred();
    }
    if (!this._supervisor) {
      this._supervisor = this._supervise().finally(() => {
        this._supervisor = null;
      });
    }
    return this._connected.promise;
  }

  /** Close for good: no more reconnects; pending requests are refused, followed runs left as they are. */
  close() {
    this._closed = true;
    this._stopKeepalive();
    this._skipBackoff();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch {
        /* already closing */
      }
      ws._chatgwClosed?.(1000, "client closed");
    }
    const error = new ChatgwError("the client is closed", "closed");
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      this._pending.delete(id);
      pending.reject(error);
    }
    this._setState({ status: "closed", url: this.state.url });
  }

  /** Use a new token from the next connection on (e.g. after a refusal). */
  setToken(token) {
    this._token = token;
  }

  /** Cut the current backoff wait short (e.g. when the browser says it is online again). */
  reconnectNow() {
    this._skipBackoff();
  }

  // ------------------------------------------------------------------ requests

  /** Start a run. Returns a Run at once: await `run.accepted`, iterate it with `for await`, or
   * subscribe with `run.onEvent()`. Options: conversationId, onBusy (reject|interrupt|enqueue),
   * id (a client reference; reuse it to retry the same chat), onEvent. */
  chat(content, options = {}) {
    const run = new Run(this);
    if (options.onEvent) run.onEvent(options.onEvent);
    const frame = { type: "chat", content, id: options.id || randomRef("c-") };
    if (options.conversationId) frame.conversation_id = options.conversationId;
    if (options.onBusy) frame.on_busy = options.onBusy;
    this._request(frame, run).catch((err) => run._fail(err));
    return run;
  }

  /** Ask the gateway to stop a run; resolves with its run.state reply. */
  stop(runId) {
    return this._request({ type: "stop", run_id: runId, id: randomRef("s-") });
  }

  /** Follow a run from `afterSeq` (0: from its start), e.g. one started before a page reload.
   * Returns the Run already followed when there is one. */
  resume(runId, afterSeq = 0) {
    let run = this.runs.get(runId);
    if (run) return run;
    run = new Run(this, runId, afterSeq);
    this.runs.set(runId, run);
    this._send(resumeFrame(run));
    if (!this._supervisor && !this._fatal && !this._closed) this.connect();
    return run;
  }

  /** The run followed under this id, if any. */
  run(runId) {
    return this.runs.get(runId);
  }

  /** Stop following a run (the run itself goes on): no resume for it after a reconnect. */
  forget(runId) {
    this.runs.delete(runId);
  }

  ping() {
    return this._request({ type: "ping", id: randomRef("p-") });
  }

  // ------------------------------------------------------------------ HTTP API (docs/webchat.md)

  listConversations({ limit, cursor } = {}) {
    const query = new URLSearchParams();
    if (limit !== undefined) query.set("limit", String(limit));
    if (cursor) query.set("cursor", cursor);
    const suffix = query.toString() ? `?${query}` : "";
    return this._http("GET", `/v1/conversations${suffix}`);
  }

  getConversation(conversationId) {
    return this._http("GET", `/v1/conversations/${encodeURIComponent(conversationId)}`);
  }

  deleteConversation(conversationId) {
    return this._http("DELETE", `/v1/conversations/${encodeURIComponent(conversationId)}`);
  }

  getRun(runId) {
    return this._http("GET", `/v1/runs/${encodeURIComponent(runId)}`);
  }

  async _http(method, path) {
    const token = await this._currentToken();
    const response = await this._fetch(this.httpUrl + path, {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 204) return null;
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const code = (body && body.code) || `http_${response.status}`;
      const message = (body && body.message) || `${method} ${path}: HTTP ${response.status}`;
      const error = new ChatgwError(message, code, body);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ------------------------------------------------------------------ internals

  _request(frame, run = null) {
    return new Promise((resolve, reject) => {
      if (this._closed) {
        reject(new ChatgwError("the client is closed", "closed"));
        return;
      }
      if (this._fatal) {
        reject(this._fatal);
        return;
      }
      // Kept until answered: sent now if a socket is open, else (and again) on the next connection.
      this._pending.set(frame.id, { frame, resolve, reject, run, timer: null });
      this._sendPending(frame.id);
      if (!this._supervisor) this.connect();
    });
  }

  _sendPending(id) {
    const pending = this._pending.get(id);
    if (!pending || !this._send(pending.frame)) return;
    clearTimeout(pending.timer);
    pending.timer = setTimeout(() => {
      if (this._pending.get(id) !== pending) return;
      this._pending.delete(id);
      pending.reject(new ChatgwError(`no reply to ${pending.frame.type} within ${this._replyTimeoutMs} ms`, "timeout"));
    }, this._replyTimeoutMs);
  }

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  async _currentToken() {
    if (this._getToken) {
      this._token = await this._getToken();
    }
    if (typeof this._token !== "string" || !this._token) {
      throw new ChatgwError("no token to authenticate with", "unauthorized");
    }
    return this._token;
  }

  _setState(state) {
    this.state = state;
    try {
      this._onState(state);
    } catch (err) {
      this._report(err);
    }
  }

  _report(err) {
    // An application callback threw: say so without breaking the client.
    if (globalThis.console) globalThis.console.error("chatgw-client: a callback threw", err);
  }

  _nextUrl() {
    const url = this._urls[this._urlIndex % this._urls.length];
    this._urlIndex += 1;
    return url;
  }

  async _supervise() {
    let backoff = this._initialBackoffMs;
    while (!this._closed) {
      const url = this._nextUrl();
      this._setState({ status: "connecting", url });
      let token;
      try {
        token = await this._currentToken();
      } catch (err) {
        this._refuse(url, err instanceof ChatgwError ? err : new ChatgwError(String(err), "unauthorized"));
        return;
      }
      const result = await this._connectOnce(url, token, () => {
        backoff = this._initialBackoffMs; // real frames flow: this connection works
      });
      if (this._closed) return;
      this.closeCodes.push(result.code);
      if (result.code === CLOSE_UNAUTHORIZED || (result.code === CLOSE_TOKEN_EXPIRED && !this._getToken)) {
        const what = result.code === CLOSE_UNAUTHORIZED ? "token refused" : "token expired";
        this._refuse(url, new ChatgwError(`${what} (close ${result.code})`, "unauthorized"));
        return;
      }
      if (result.opened) this.reconnects += 1;
      const delay = Math.round(backoff * (0.5 + Math.random()));
      const reason = result.opened ? `connection closed (${result.code})` : result.reason;
      this._setState({ status: "waiting", url, retryInMs: delay, reason });
      await this._sleep(delay);
      backoff = Math.min(backoff * 2, this._maxBackoffMs);
    }
  }

  _refuse(url, error) {
    this._fatal = error;
    this._setState({ status: "refused", url, reason: error.message });
    this._connected.reject(error);
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      this._pending.delete(id);
      pending.reject(error);
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this._wakeBackoff = done;
    }).finally(() => {
      this._wakeBackoff = null;
    });
  }

  _skipBackoff() {
    if (this._wakeBackoff) this._wakeBackoff();
  }

  /** One WebSocket from open to close. Resolves with {opened, code, reason}. */
  _connectOnce(url, token, onWorking) {
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new this._WebSocket(url);
      } catch (err) {
        resolve({ opened: false, code: null, reason: String(err && err.message ? err.message : err) });
        return;
      }
      let opened = false;
      let finished = false;
      const hello = randomRef("hello-");
      const finish = (code, reason) => {
        if (finished) return;
        finished = true;
        clearTimeout(openTimer);
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        if (this._ws === ws) this._ws = null;
        this._stopKeepalive();
        resolve({ opened, code, reason });
      };
      ws._chatgwClosed = finish;
      const openTimer = setTimeout(() => {
        try {
          ws.close();
        } catch {
          /* not open yet */
        }
        finish(null, `no connection within ${this._connectTimeoutMs} ms`);
      }, this._connectTimeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(openTimer);
        this._ws = ws;
        ws.send(JSON.stringify({ type: "auth", token }));
        // Success sends nothing, so a ping tells when the socket is authenticated and served.
        ws.send(JSON.stringify({ type: "ping", id: hello }));
        const resuming = [...this.runs.values()].filter((run) => !run.terminal && !run.error);
        for (const run of resuming) ws.send(JSON.stringify(resumeFrame(run)));
        for (const id of this._pending.keys()) this._sendPending(id);
        this._lastFrameAt = Date.now();
        this._startKeepalive(ws);
        this._helloResuming = resuming.length;
      };
      ws.onmessage = (message) => {
        this._lastFrameAt = Date.now();
        let frame;
        try {
          frame = JSON.parse(typeof message.data === "string" ? message.data : new TextDecoder().decode(message.data));
        } catch {
          return; // the gateway only sends JSON; ignore anything else
        }
        if (!frame || typeof frame !== "object") return;
        if (frame.type !== "error") onWorking(); // an error is no proof: 1013 follows `unavailable`
        if (frame.type === "pong" && frame.id === hello) {
          this._setState({ status: "connected", url, resuming: this._helloResuming || 0 });
          this._connected.resolve();
          return;
        }
        this._onFrame(frame);
      };
      ws.onerror = () => {
        // A close event should follow, but not every implementation sends one for a connection
        // that never opened (Node 20's undici): do not wait for it.
        if (!opened) finish(1006, "could not connect");
        else setTimeout(() => finish(1006, "connection error"), 1000);
      };
      ws.onclose = (event) => finish(event.code, event.reason || (opened ? "closed" : "could not connect"));
    });
  }

  _startKeepalive(ws) {
    this._stopKeepalive();
    if (!this._keepaliveMs) return;
    // A quiet socket gets a ping (which also keeps CHATGW_IDLE_TIMEOUT_S away); one that stays
    // silent for a reply timeout after it is taken for dead (browsers cannot see TCP dying).
    this._keepalive = setInterval(() => {
      const quietMs = Date.now() - this._lastFrameAt;
      if (quietMs > this._keepaliveMs + this._replyTimeoutMs) {
        try {
          ws.close(1000, "no answer to keepalive");
        } catch {
          /* closing anyway */
        }
        ws._chatgwClosed?.(1006, "no answer to keepalive");
      } else if (quietMs >= this._keepaliveMs && ws.readyState === OPEN) {
        ws.send(JSON.stringify({ type: "ping", id: randomRef("k-") }));
      }
    }, Math.max(50, Math.min(this._keepaliveMs, this._replyTimeoutMs) / 2));
  }

  _stopKeepalive() {
    if (this._keepalive) clearInterval(this._keepalive);
    this._keepalive = null;
  }

  _onFrame(frame) {
    if (typeof frame.seq === "number") {
      this._onEvent(frame);
      return;
    }
    const pending = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
    if (pending) {
      this._pending.delete(frame.id);
      clearTimeout(pending.timer);
      if (frame.type === "error") {
        pending.reject(new ChatgwError(frame.message || frame.code, frame.code || "internal", frame));
        return;
      }
      if (frame.type === "run.accepted" && pending.run) {
        // Registered before the next frame is read: the run's events follow right behind.
        this.runs.set(frame.run_id, pending.run);
        pending.run._accept(frame);
      }
      pending.resolve(frame);
      return;
    }
    if (frame.type === "error") {
      const run = frame.run_id ? this.runs.get(frame.run_id) : undefined;
      if (run && !run.terminal) {
        // A resume refused (run_not_found after retention, too_many_follows): it cannot be followed.
        this.runs.delete(frame.run_id);
        run._fail(new ChatgwError(frame.message || frame.code, frame.code || "internal", frame));
        return;
      }
      // E.g. `unavailable` before close 1013: the close that follows makes us reconnect and resume.
      try {
        this._onNotice(frame);
      } catch (err) {
        this._report(err);
      }
    }
  }

  _onEvent(event) {
    const run = this.runs.get(event.run_id);
    if (!run || run.terminal) return;
    if (event.seq <= run.lastSeq) return; // a duplicate from an overlapping replay
    if (event.seq !== run.lastSeq + 1) {
      // Should not happen (the gateway fills gaps); ask again rather than skip.
      this._send(resumeFrame(run));
      return;
    }
    run._push(event);
  }
}

function resumeFrame(run) {
  return { type: "resume", run_id: run.runId, after_seq: run.lastSeq };
}

/** ws://host:port/ws → http://host:port (the HTTP API lives beside the socket). */
export function httpBase(wsUrl) {
  const url = new URL(wsUrl, globalThis.location ? globalThis.location.href : undefined);
  url.protocol = url.protocol === "wss:" ? "https:" : url.protocol === "ws:" ? "http:" : url.protocol;
  url.pathname = url.pathname.replace(/\/ws\/?$/, "/");
  url.search = "";
  url.hash = "";
  return url.toString().replace(/\/+$/, "");
}

/** The gateway URL a page served by the gateway connects back to. */
export function sameOriginUrl(location = globalThis.location) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}
