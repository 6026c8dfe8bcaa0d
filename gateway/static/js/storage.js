// What the page keeps between reloads, per user: the open conversation (this tab only) and the runs
// it started that were still answering (so a reload shows their questions and resumes them).
// Tokens are never put in a URL; a JWT typed into the page stays in this tab's sessionStorage.

const RUN_MAX_AGE_MS = 24 * 3600 * 1000;

function read(store, key, fallback) {
  try {
    const raw = store.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback; // storage disabled, or a value from an older page: start afresh
  }
}

function write(store, key, value) {
  try {
    if (value === null || value === undefined) store.removeItem(key);
    else store.setItem(key, JSON.stringify(value));
  } catch {
    /* storage full or disabled: the page still works, a reload just restores less */
  }
}

export class PageMemory {
  constructor(user) {
    this.openKey = `chatgw.open.${user}`;
    this.runsKey = `chatgw.runs.${user}`;
  }

  get openConversation() {
    return read(sessionStorage, this.openKey, null);
  }

  set openConversation(conversationId) {
    write(sessionStorage, this.openKey, conversationId);
  }

  /** runId -> {conversationId, question, at} of runs started here and not yet ended. */
  runs() {
    const runs = read(localStorage, this.runsKey, {});
    const now = Date.now();
    for (const [runId, run] of Object.entries(runs)) if (!(now - run.at < RUN_MAX_AGE_MS)) delete runs[runId];
    return runs;
  }

  rememberRun(runId, conversationId, question) {
    const runs = this.runs();
    runs[runId] = { conversationId, question, at: Date.now() };
    write(localStorage, this.runsKey, runs);
  }

  forgetRun(runId) {
    const runs = this.runs();
    if (!(runId in runs)) return;
    delete runs[runId];
    write(localStorage, this.runsKey, runs);
  }
}

export const credentials = {
  get devUser() {
    return read(localStorage, "chatgw.user", null);
  },
  set devUser(name) {
    write(localStorage, "chatgw.user", name);
  },
  get token() {
    return read(sessionStorage, "chatgw.token", null);
  },
  set token(token) {
    write(sessionStorage, "chatgw.token", token);
  },
  get refusal() {
    return read(sessionStorage, "chatgw.refusal", null);
  },
  set refusal(message) {
    write(sessionStorage, "chatgw.refusal", message);
  },
  forget() {
    write(localStorage, "chatgw.user", null);
    write(sessionStorage, "chatgw.token", null);
  },
};
