// The DOM: the sidebar, the messages of the open conversation, the composer, the indicator.
// Text from the model or the user only enters the page as text nodes or through renderMarkdown.

import { copyText, renderMarkdown } from "./markdown.js";
import { describeConnection, describeError, describeRetrying } from "./words.js";

const $ = (id) => document.getElementById(id);
const RENDER_EVERY_MS = 40;

const STATUS_LABEL = {
  pending: "Sending…",
  queued: "Queued: starts when the answer before it ends",
  retrying: "",
  stopped: "Stopped",
  failed: "",
  refused: "Not sent",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class View {
  constructor(actions) {
    this.actions = actions; // {open(key), remove(key), retry(turn), stop(), send(text, onBusy), newChat()}
    this.turnNodes = new Map(); // turn.key -> article
    this.dirty = new Set();
    this.timer = 0;
    this.messages = $("messages");
    this.empty = $("empty");
    this.input = $("input");
    this.wire();
  }

  wire() {
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener("input", () => this.fitInput());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !event.isComposing) this.actions.stop();
    });
    $("stop").addEventListener("click", () => this.actions.stop());
    $("new-chat").addEventListener("click", () => this.actions.newChat());
    $("more").addEventListener("click", () => this.actions.more());
    $("sign-out").addEventListener("click", () => this.actions.signOut());
  }

  submit() {
    const text = this.input.value;
    if (!text.trim()) return;
    const onBusy = $("busy-choice").hidden ? undefined : $("on-busy").value || undefined;
    this.input.value = "";
    this.fitInput();
    this.actions.send(text, onBusy);
  }

  fitInput() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 240)}px`;
  }

  focusInput() {
    this.input.focus();
  }

  // ------------------------------------------------------------------ chrome

  showApp(who) {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("who").textContent = who;
  }

  showConnection(state) {
    const box = $("connection");
    box.dataset.status = state.status;
    $("connection-text").textContent = describeConnection(state);
    box.title = state.reason ? `last: ${state.reason}` : state.url;
  }

  notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  historyNote(text) {
    $("history-note").textContent = text || "";
    $("history-note").hidden = !text;
  }

  // ------------------------------------------------------------------ sidebar

  renderList(conversations, currentKey, hasMore) {
    const list = $("conversations");
    list.replaceChildren();
    for (const conversation of conversations) {
      const item = el("li", "conversation");
      item.dataset.key = conversation.key;
      if (conversation.id) item.dataset.id = conversation.id;
      if (conversation.key === currentKey) item.setAttribute("aria-current", "true");
      const open = el("button", "conversation-open");
      open.type = "button";
      if (conversation.streaming) open.append(el("span", "streaming-dot"));
      open.append(el("span", "conversation-title", conversation.title));
      open.title = conversation.title;
      open.addEventListener("click", () => this.actions.open(conversation.key));
      const remove = el("button", "conversation-delete", "×");
      remove.type = "button";
      remove.title = "Delete this conversation";
      remove.setAttribute("aria-label", `Delete “${conversation.title}”`);
      remove.addEventListener("click", () => this.confirmDelete(remove, conversation.key));
      item.append(open, remove);
      list.append(item);
    }
    $("more").hidden = !hasMore;
  }

  confirmDelete(button, key) {
    // Two clicks rather than a modal dialog: the second one, within 3 s, deletes.
    if (button.dataset.armed) {
      this.actions.remove(key);
      return;
    }
    button.dataset.armed = "1";
    button.textContent = "Delete?";
    button.classList.add("armed");
    setTimeout(() => {
      delete button.dataset.armed;
      button.textContent = "×";
      button.classList.remove("armed");
    }, 3000);
  }

  // ------------------------------------------------------------------ messages

  renderConversation(conversation) {
    this.showTitle(conversation);
    this.turnNodes.clear();
    this.dirty.clear();
    this.messages.replaceChildren();
    if (!conversation.turns.length) this.messages.append(this.empty);
    for (const turn of conversation.turns) this.messages.append(this.turnNode(turn));
    this.renderComposer(conversation);
    this.scrollToEnd(true);
  }

  showTitle(conversation) {
    $("chat-title").textContent = conversation.title;
    document.title = conversation.turns.length ? `${conversation.title} · chatgw` : "chatgw";
  }

  appendTurn(turn) {
    this.empty.remove();
    this.messages.append(this.turnNode(turn));
    this.scrollToEnd(true);
  }

  removeTurn(turn) {
    this.turnNodes.get(turn.key)?.remove();
    this.turnNodes.delete(turn.key);
  }

  /** Re-render a turn soon: many tokens, one paint. A timer, not requestAnimationFrame, which a
   * hidden tab never runs: its answers stay current for when it is shown again. */
  updateTurn(turn) {
    if (!this.turnNodes.has(turn.key)) return;
    this.dirty.add(turn);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), RENDER_EVERY_MS);
  }

  flush() {
    this.timer = 0;
    const stick = this.nearEnd();
    for (const turn of this.dirty) this.fillAnswer(this.turnNodes.get(turn.key), turn);
    this.dirty.clear();
    if (stick) this.scrollToEnd(false);
  }

  turnNode(turn) {
    const article = el("article", "turn");
    const question = el("div", "question");
    question.append(el("div", "bubble", turn.question));
    const answer = el("div", "answer");
    article.append(question, answer);
    this.turnNodes.set(turn.key, article);
    this.fillAnswer(article, turn);
    return article;
  }

  fillAnswer(article, turn) {
    if (!article) return;
    const answer = article.querySelector(".answer");
    const status = turn.status;
    article.dataset.status = status;
    if (turn.runId || turn.run?.runId) article.dataset.runId = turn.runId || turn.run.runId;
    const parts = [];
    const label = this.statusLine(turn, status);
    if (label) parts.push(label);
    const body = el("div", "markdown");
    body.append(renderMarkdown(turn.text));
    if (turn.streaming && status !== "queued" && status !== "pending") body.classList.add("streaming");
    if (turn.text || turn.streaming) parts.push(body);
    const sources = this.sourcesNode(turn.sources);
    if (sources) parts.push(sources);
    const actions = this.actionsNode(turn, status);
    if (actions) parts.push(actions);
    answer.replaceChildren(...parts);
  }

  statusLine(turn, status) {
    let text = STATUS_LABEL[status] || "";
    let kind = status;
    if (status === "failed" || status === "refused") text = describeError(turn.failure);
    if (status === "running" || status === "retrying") {
      const retry = turn.retrying;
      if (!retry) return null;
      text = describeRetrying(retry);
      kind = "retrying";
    }
    if (!text) return null;
    const line = el("p", `answer-status status-${kind}`, text);
    line.setAttribute("role", status === "failed" || status === "refused" ? "alert" : "status");
    return line;
  }

  sourcesNode(sources) {
    if (!sources || !sources.length) return null;
    const box = el("details", "sources");
    box.append(el("summary", "", `${sources.length} source${sources.length > 1 ? "s" : ""}`));
    const list = el("ol");
    for (const source of sources) {
      const item = el("li", "source");
      item.append(el("span", "source-title", source.title), el("span", "source-id", source.id));
      item.append(el("p", "source-snippet", source.snippet));
      list.append(item);
    }
    box.append(list);
    return box;
  }

  actionsNode(turn, status) {
    if (turn.streaming) return null;
    const bar = el("div", "answer-actions");
    if (turn.text) {
      const copy = el("button", "link copy-answer", "Copy");
      copy.type = "button";
      copy.addEventListener("click", () => copyText(turn.text, copy));
      bar.append(copy);
    }
    const retry = el("button", "link retry", status === "completed" ? "Ask again" : "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => this.actions.retry(turn));
    bar.append(retry);
    return bar;
  }

  renderComposer(conversation) {
    const streaming = Boolean(conversation.streamingTurn);
    $("stop").hidden = !streaming;
    $("busy-choice").hidden = !streaming;
  }

  nearEnd() {
    const m = this.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  scrollToEnd(force) {
    if (force || this.nearEnd()) this.messages.scrollTop = this.messages.scrollHeight;
  }
}
