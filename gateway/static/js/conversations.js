// The page's state: conversations and their turns. No DOM here.

const TITLE_CHARS = 80;
let nextKey = 1;

/** A title from the first question, as the server makes one (shared/conversations.py): on one
 * line, cut at a word to about 80 characters. */
export function titleFrom(question) {
  const text = question.split(/\s+/).filter(Boolean).join(" ");
  if (text.length <= TITLE_CHARS) return text || "New chat";
  let cut = text.slice(0, TITLE_CHARS - 1);
  const space = cut.lastIndexOf(" ");
  if (space >= TITLE_CHARS / 2) cut = cut.slice(0, space);
  return `${cut.trimEnd()}…`;
}

/** One question and its answer: from the HTTP API (`stored`: finished), or followed live through
 * a Run (sent from this page, or resumed after a reload). */
export class Turn {
  constructor({ question, runId = null, answer = "", stopped = false, sources = [], stored = false }) {
    this.key = `t${nextKey++}`;
    this.stored = stored;
    this.question = question;
    this.runId = runId;
    this.answer = answer;
    this.stopped = stopped;
    this.storedSources = sources;
    this.run = null; // a chatgw-client Run while (or after) it is followed here
    this.refusal = null; // a ChatgwError when the chat was refused (rate limited, busy, ...)
  }

  follow(run) {
    this.run = run;
    this.refusal = null;
  }

  /** pending | queued | running | retrying | completed | stopped | failed | refused */
  get status() {
    if (this.refusal) return "refused";
    if (this.run) return this.run.status;
    if (!this.stored) return "pending"; // on its way to the gateway
    return this.stopped ? "stopped" : "completed";
  }

  get streaming() {
    return ["pending", "queued", "running", "retrying"].includes(this.status);
  }

  get text() {
    return this.run ? this.run.text : this.answer;
  }

  get sources() {
    return this.run ? this.run.sources : this.storedSources;
  }

  /** The run.retrying event of the attempt in progress, if it was retried. */
  get retrying() {
    if (!this.run) return null;
    const retries = this.run.events.filter((e) => e.type === "run.retrying");
    return retries.length ? retries[retries.length - 1] : null;
  }

  get failure() {
    if (this.refusal) return this.refusal;
    if (this.run?.error) return this.run.error;
    const terminal = this.run?.terminal;
    return terminal?.type === "run.failed" ? terminal.error : null;
  }
}

export class Conversation {
  constructor({ id = null, title = "New chat", lastActivity = 0, activeRun = null } = {}) {
    this.key = id || `new-${nextKey++}`; // stable while a new conversation waits for its id
    this.id = id;
    this.title = title;
    this.lastActivity = lastActivity;
    this.activeRun = activeRun;
    this.turns = [];
    this.loaded = id === null; // a new conversation has nothing to load
    this.loading = null;
  }

  get streaming() {
    return this.turns.some((turn) => turn.streaming) || (!this.loaded && Boolean(this.activeRun));
  }

  /** The latest turn still answering (the one Stop and Esc stop). */
  get streamingTurn() {
    for (let i = this.turns.length - 1; i >= 0; i--) if (this.turns[i].streaming) return this.turns[i];
    return null;
  }
}

/** Every conversation the page knows: the server's list, plus new ones not yet listed there. */
export class ConversationList {
  constructor() {
    this.byKey = new Map();
    this.nextCursor = null;
  }

  get(key) {
    return this.byKey.get(key);
  }

  byId(id) {
    for (const conversation of this.byKey.values()) if (conversation.id === id) return conversation;
    return undefined;
  }

  add(conversation) {
    this.byKey.set(conversation.key, conversation);
    return conversation;
  }

  remove(conversation) {
    this.byKey.delete(conversation.key);
  }

  /** Merge a page of GET /v1/conversations: new ones added, known ones refreshed. */
  merge(summaries) {
    for (const summary of summaries) {
      const known = this.byId(summary.id);
      const fields = { title: summary.title, lastActivity: toMillis(summary.last_activity), activeRun: summary.active_run };
      if (known) Object.assign(known, fields);
      else this.add(new Conversation({ id: summary.id, ...fields }));
    }
  }

  /** Newest activity first; a conversation without any turn yet is not listed. */
  sorted() {
    return [...this.byKey.values()]
      .filter((c) => c.id !== null || c.turns.length)
      .sort((a, b) => b.lastActivity - a.lastActivity);
  }
}

/** The API's timestamps (ISO strings or Unix seconds) → milliseconds. */
export function toMillis(value) {
  if (typeof value === "number") return value < 1e12 ? value * 1000 : value;
  const parsed = Date.parse(value || "");
  return Number.isNaN(parsed) ? 0 : parsed;
}
