// The web chat: conversations from the HTTP API, answers through chatgw-client, rendered by View.

import { ChatgwClient } from "../chatgw-client/chatgw-client.js";
import { Conversation, ConversationList, Turn, titleFrom } from "./conversations.js";
import { PageMemory } from "./storage.js";
import { View } from "./view.js";
import { describeError } from "./words.js";

const PAGE_SIZE = 20;
const STATUS_EVENTS = new Set(["run.started", "run.retrying", "run.completed", "run.stopped", "run.failed"]);

/** The gateway this page came from (works under a path prefix too: everything is relative). */
export function gatewayUrls(location = window.location) {
  const base = new URL(".", location.href);
  const socket = new URL("ws", base);
  socket.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  return { socket: socket.toString(), http: base.toString().replace(/\/$/, "") };
}

export class ChatApp {
  /** getToken: () => token (called before every connection); who: shown in the sidebar;
   * user: names this user's saved state; onRefused(error): the token was refused. */
  constructor({ getToken, who, user, onRefused }) {
    this.who = who;
    this.onRefused = onRefused || (() => {});
    this.memory = new PageMemory(user);
    this.list = new ConversationList();
    this.current = null;
    this.everConnected = false;
    this.view = new View({
      open: (key) => this.open(key),
      remove: (key) => this.remove(key),
      retry: (turn) => this.retry(turn),
      stop: () => this.stop(),
      send: (text, onBusy) => this.send(text, onBusy),
      newChat: () => this.newChat(),
      more: () => this.loadList(this.list.nextCursor),
      signOut: () => this.onRefused(null),
    });
    const urls = gatewayUrls();
    this.client = new ChatgwClient({
      url: urls.socket,
      httpUrl: urls.http,
      getToken,
      keepaliveMs: 25000,
      onState: (state) => this.onState(state),
      onNotice: (frame) => this.view.notice(describeError(frame)),
    });
  }

  async start() {
    this.view.showApp(this.who);
    const openId = this.memory.openConversation; // read before the blank chat below replaces it
    this.newChat();
    this.client.connect().catch((err) => {
      if (err.code === "unauthorized") this.onRefused(err);
    });
    window.addEventListener("online", () => this.client.reconnectNow());
    await this.loadList();
    if (openId) {
      const conversation = this.list.byId(openId) || this.list.add(new Conversation({ id: openId, title: "…" }));
      await this.open(conversation.key);
    }
  }

  // ------------------------------------------------------------------ connection

  onState(state) {
    this.view.showConnection(state);
    if (state.status === "connected") {
      this.view.notice("");
      if (this.everConnected) this.loadList(); // catch up with what changed while away
      this.everConnected = true;
    }
  }

  // ------------------------------------------------------------------ conversations

  async loadList(cursor = null) {
    try {
      const page = await this.client.listConversations({ limit: PAGE_SIZE, cursor: cursor || undefined });
      this.list.merge(page.conversations);
      if (!cursor || this.list.nextCursor === cursor) this.list.nextCursor = page.next_cursor;
      this.view.historyNote("");
    } catch (err) {
      const missing = err.status === 404 || err.status === 405;
      this.view.historyNote(missing ? "This gateway keeps no conversation list." : describeError(err));
    }
    this.renderList();
  }

  renderList() {
    this.view.renderList(this.list.sorted(), this.current?.key, Boolean(this.list.nextCursor));
  }

  newChat() {
    if (this.current && this.current.id === null && !this.current.turns.length) {
      this.view.focusInput();
      return;
    }
    const conversation = this.list.add(new Conversation());
    this.show(conversation);
  }

  async open(key) {
    const conversation = this.list.get(key);
    if (!conversation) return;
    this.show(conversation);
    if (!conversation.loaded) await this.load(conversation);
  }

  show(conversation) {
    const previous = this.current;
    this.current = conversation;
    // Leaving an untouched new chat: forget it.
    if (previous && previous !== conversation && previous.id === null && !previous.turns.length) {
      this.list.remove(previous);
    }
    this.memory.openConversation = conversation.id;
    this.view.notice("");
    this.view.renderConversation(conversation);
    this.renderList();
    this.view.focusInput();
  }

  load(conversation) {
    conversation.loading ||= this.fetchTurns(conversation).finally(() => {
      conversation.loading = null;
    });
    return conversation.loading;
  }

  async fetchTurns(conversation) {
    let detail;
    try {
      detail = await this.client.getConversation(conversation.id);
    } catch (err) {
      if (err.status === 404 && err.code !== "http_404") {
        // Deleted or expired elsewhere.
        this.list.remove(conversation);
        if (this.current === conversation) this.newChat();
        this.view.notice(describeError({ code: "conversation_not_found" }));
        this.renderList();
        return;
      }
      detail = { title: conversation.title, active_run: conversation.activeRun, turns: [] };
      if (err.status !== 404) this.view.notice(describeError(err));
    }
    const local = conversation.turns; // asked here while the history was on its way
    const stored = (detail.turns || [])
      .filter((t) => !local.some((l) => l.runId === t.run_id))
      .map(
        (t) =>
          new Turn({
            question: t.question,
            runId: t.run_id,
            answer: t.answer || "",
            stopped: Boolean(t.stopped),
            sources: t.sources || [],
            stored: true,
          }),
      );
    conversation.turns = [...stored, ...local];
    if (detail.title) conversation.title = detail.title;
    conversation.activeRun = detail.active_run || null;
    conversation.loaded = true;
    this.resumeRuns(conversation, detail);
    if (conversation.title === "…" && conversation.turns.length) conversation.title = titleFrom(conversation.turns[0].question);
    if (this.current === conversation) this.view.renderConversation(conversation);
    this.renderList();
  }

  /** After a reload: follow again, from seq 0, every run of this conversation still answering
   * (the one the API names, and those this browser started); the answer is rebuilt from its log. */
  resumeRuns(conversation, detail) {
    const saved = this.memory.runs();
    const runIds = new Set(
      Object.entries(saved)
        .filter(([, run]) => run.conversationId === conversation.id)
        .map(([runId]) => runId),
    );
    if (detail.active_run) runIds.add(detail.active_run);
    const finished = new Set((detail.turns || []).filter((t) => t.answered_at).map((t) => t.run_id));
    for (const runId of runIds) {
      let turn = conversation.turns.find((t) => t.runId === runId);
      if (turn?.run) continue; // followed already
      if (finished.has(runId) && runId !== detail.active_run) {
        this.memory.forgetRun(runId);
        continue;
      }
      if (!turn) {
        turn = new Turn({ question: saved[runId]?.question || "…", runId });
        conversation.turns.push(turn);
      }
      this.follow(conversation, turn, this.client.resume(runId, 0));
    }
  }

  async remove(key) {
    const conversation = this.list.get(key);
    if (!conversation) return;
    if (conversation.id) {
      try {
        await this.client.deleteConversation(conversation.id);
      } catch (err) {
        if (err.status !== 404) {
          this.view.notice(describeError(err));
          return;
        }
      }
    }
    for (const turn of conversation.turns) {
      const runId = turn.run?.runId || turn.runId;
      if (runId) {
        this.client.forget(runId);
        this.memory.forgetRun(runId);
      }
    }
    this.list.remove(conversation);
    if (this.current === conversation) {
      this.current = null;
      this.newChat();
    }
    this.renderList();
  }

  // ------------------------------------------------------------------ runs

  async send(text, onBusy) {
    const conversation = this.current;
    const turn = new Turn({ question: text });
    if (!conversation.turns.length && conversation.id === null) conversation.title = titleFrom(text);
    conversation.turns.push(turn);
    conversation.lastActivity = Date.now();
    this.view.showTitle(conversation);
    this.view.appendTurn(turn);
    this.refreshChrome(conversation);
    // A second message in a new conversation waits for the first one's conversation id.
    if (conversation.id === null && conversation.idReady) await conversation.idReady;
    const run = this.client.chat(text, { conversationId: conversation.id || undefined, onBusy });
    this.follow(conversation, turn, run);
    const accepted = run.accepted.then(
      (frame) => {
        turn.runId = frame.run_id;
        if (conversation.id === null) {
          conversation.id = frame.conversation_id;
          if (this.current === conversation) this.memory.openConversation = conversation.id;
        }
        if (!run.terminal) this.memory.rememberRun(frame.run_id, conversation.id, text);
        this.view.updateTurn(turn);
        this.renderList();
      },
      (err) => {
        turn.refusal = err;
        this.view.updateTurn(turn);
        this.refreshChrome(conversation);
      },
    );
    if (conversation.id === null) conversation.idReady = accepted;
  }

  follow(conversation, turn, run) {
    turn.follow(run);
    run.onEvent((event) => {
      if (this.current === conversation) this.view.updateTurn(turn);
      if (event === null || STATUS_EVENTS.has(event.type)) {
        if (event === null || run.terminal) {
          this.memory.forgetRun(run.runId);
          conversation.lastActivity = Date.now();
        }
        this.refreshChrome(conversation);
      }
    });
  }

  refreshChrome(conversation) {
    if (this.current === conversation) this.view.renderComposer(conversation);
    this.renderList();
  }

  stop() {
    const turn = this.current?.streamingTurn;
    if (!turn?.run) return;
    turn.run.stop().catch((err) => this.view.notice(describeError(err)));
  }

  retry(turn) {
    const conversation = this.current;
    if (turn.status === "refused") {
      conversation.turns = conversation.turns.filter((t) => t !== turn);
      this.view.removeTurn(turn);
    }
    this.send(turn.question);
  }
}
