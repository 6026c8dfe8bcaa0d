// Types for chatgw-client. The frame interfaces mirror the schemas of docs/asyncapi.yaml, name for
// name and field for field; tests/unit/test_js_client_types.py fails when the two disagree.

// ---------------------------------------------------------------- frames: client → gateway

export interface AuthFrame {
  type: "auth";
  token: string;
}

export interface ChatFrame {
  type: "chat";
  content: string;
  conversation_id?: string | null;
  id?: string | null;
  on_busy?: "reject" | "interrupt" | "enqueue" | null;
}

export interface StopFrame {
  type: "stop";
  run_id: string;
  id?: string | null;
}

export interface ResumeFrame {
  type: "resume";
  run_id: string;
  after_seq?: number;
  id?: string | null;
}

export interface PingFrame {
  type: "ping";
  id?: string | null;
}

export type ClientFrame = AuthFrame | ChatFrame | StopFrame | ResumeFrame | PingFrame;

// ---------------------------------------------------------------- frames: gateway → client
// Read leniently: a newer gateway may add fields. Fields whose value would be null are left out.

export interface RunAccepted {
  type: "run.accepted";
  id?: string | null;
  run_id: string;
  conversation_id: string;
  queued?: boolean;
}

export interface RunState {
  type: "run.state";
  id?: string | null;
  run_id: string;
  status: "stopping" | "completed" | "stopped" | "failed";
}

export interface Pong {
  type: "pong";
  id?: string | null;
}

export interface ErrorFrame {
  type: "error";
  id?: string | null;
  run_id?: string | null;
  code: string;
  message: string;
  retry_after_ms?: number | null;
  /** On budget_exceeded: Unix time (s) of the next UTC midnight, when the daily budget resets. */
  resets_at?: number | null;
}

export interface Source {
  id: string;
  title: string;
  snippet: string;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  /** false on a cached answer: the original run's usage, not billed again. */
  billed?: boolean;
}

export interface ErrorInfo {
  code: string;
  message: string;
}

export interface RunStarted {
  type: "run.started";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  attempt?: number;
}

export interface RunRetrying {
  type: "run.retrying";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  attempt: number;
  reason?: "worker_lost" | "worker_shutdown" | "store_unavailable";
}

export interface Retrieval {
  type: "retrieval";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  sources: Source[];
}

export interface TokenEvent {
  type: "token";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  text: string;
}

export interface RunCompleted {
  type: "run.completed";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  content: string;
  usage?: Usage | null;
  truncated?: boolean;
  /** The answer came from the answer cache (docs/tiers.md), not the model. */
  cached?: boolean;
}

export interface RunStopped {
  type: "run.stopped";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  content: string;
}

export interface RunFailed {
  type: "run.failed";
  run_id: string;
  conversation_id: string;
  seq: number;
  ts: number;
  error: ErrorInfo;
}

export type RunEvent = RunStarted | RunRetrying | Retrieval | TokenEvent | RunCompleted | RunStopped | RunFailed;
export type TerminalEvent = RunCompleted | RunStopped | RunFailed;
export type Reply = RunAccepted | RunState | Pong | ErrorFrame;
export type ServerFrame = Reply | RunEvent;

export declare const TERMINAL_TYPES: readonly ["run.completed", "run.stopped", "run.failed"];

// ---------------------------------------------------------------- HTTP API (/v1, docs/http.md)

export interface ConversationSummary {
  id: string;
  /** The first question, on one line, shortened. */
  title: string;
  /** Unix time, seconds. */
  created_at: number | null;
  last_activity: number | null;
  /** The run in flight (resume it over the socket), or null. */
  active_run: string | null;
}

export interface ConversationPage {
  conversations: ConversationSummary[];
  next_cursor: string | null;
}

export interface Turn {
  run_id: string | null;
  question: string;
  /** Partial when stopped. */
  answer: string;
  stopped: boolean;
  sources: Source[];
  asked_at: number | null;
  answered_at: number | null;
}

export interface Conversation extends ConversationSummary {
  turns: Turn[];
}

export interface RunInfo {
  run_id: string;
  status: "queued" | "running" | "completed" | "stopped" | "failed";
  last_seq: number;
  conversation_id: string;
  created_at: number | null;
  ended_at: number | null;
  attempt: number;
}

// ---------------------------------------------------------------- the client

export type OnBusy = "reject" | "interrupt" | "enqueue";

export interface ConnectionState {
  status: "idle" | "connecting" | "connected" | "waiting" | "refused" | "closed";
  url: string;
  /** waiting: the next attempt starts in this long. */
  retryInMs?: number;
  /** connected: runs being resumed on this connection. */
  resuming?: number;
  /** waiting or refused: why the last attempt or connection ended. */
  reason?: string;
}

export declare class ChatgwError extends Error {
  constructor(message: string, code?: string, frame?: ErrorFrame | Record<string, unknown> | null);
  /** A wire error code (docs/protocol.md), or client_error, timeout, closed, http_<status>. */
  code: string;
  frame: ErrorFrame | Record<string, unknown> | null;
  /** On rate_limited: how long to wait before a retry may succeed. */
  retryAfterMs: number | null;
  /** HTTP API errors: the response status. */
  status?: number;
}

export type RunStatus = "pending" | "queued" | "running" | "retrying" | "completed" | "stopped" | "failed";

export declare class Run implements AsyncIterable<RunEvent> {
  /** null until run.accepted. */
  runId: string | null;
  conversationId: string | null;
  afterSeq: number;
  /** Every event received, in seq order, each once (from afterSeq + 1). */
  events: RunEvent[];
  queued: boolean;
  /** Set when the run cannot be followed (the chat was refused, or a resume got run_not_found). */
  error: ChatgwError | null;
  readonly accepted: Promise<RunAccepted | null>;
  readonly done: Promise<TerminalEvent>;
  readonly lastSeq: number;
  readonly terminal: TerminalEvent | null;
  readonly status: RunStatus;
  /** Events of the current attempt (a run.retrying discards what came before it). */
  readonly attemptEvents: RunEvent[];
  /** The answer so far; the terminal event's content once there is one. */
  readonly text: string;
  readonly sources: Source[];
  /** Called for every event so far, then for each new one; `null` when the run fails to be followed. */
  onEvent(listener: (event: RunEvent | null, run: Run) => void): () => void;
  stop(): Promise<RunState>;
  [Symbol.asyncIterator](): AsyncIterator<RunEvent>;
}

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export interface ChatgwClientOptions {
  /** ws://host:port/ws (or urls: tried in turn, one per connection attempt). */
  url?: string;
  urls?: string[];
  /** A fixed token (dev:<user> in dev mode, a JWT otherwise)... */
  token?: string;
  /** ...or a function called before every connection and HTTP request (fresh JWTs). */
  getToken?: () => string | Promise<string>;
  /** Base of the HTTP API; default: the first url with ws→http and without /ws. */
  httpUrl?: string;
  /** A WebSocket implementation; default globalThis.WebSocket (e.g. pass `ws` on older Node). */
  WebSocket?: new (url: string) => WebSocketLike;
  fetch?: typeof fetch;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  connectTimeoutMs?: number;
  replyTimeoutMs?: number;
  /** Ping a quiet socket this often; 0 turns it off. */
  keepaliveMs?: number;
  onState?: (state: ConnectionState) => void;
  /** Error frames that answer no request, e.g. `unavailable` before close 1013. */
  onNotice?: (frame: ErrorFrame) => void;
}

export interface ChatOptions {
  conversationId?: string;
  /** What to do when the conversation has a run in flight (the server's setting limits the choice). */
  onBusy?: OnBusy;
  /** A client reference; reusing it (with the same content) retries the same chat. */
  id?: string;
  onEvent?: (event: RunEvent | null, run: Run) => void;
}

export declare class ChatgwClient {
  constructor(options: ChatgwClientOptions);
  readonly httpUrl: string;
  readonly runs: Map<string, Run>;
  readonly state: ConnectionState;
  readonly reconnects: number;
  readonly closeCodes: (number | null)[];
  connect(): Promise<void>;
  close(): void;
  setToken(token: string): void;
  reconnectNow(): void;
  chat(content: string, options?: ChatOptions): Run;
  stop(runId: string): Promise<RunState>;
  resume(runId: string, afterSeq?: number): Run;
  run(runId: string): Run | undefined;
  forget(runId: string): void;
  ping(): Promise<Pong>;
  listConversations(options?: { limit?: number; cursor?: string }): Promise<ConversationPage>;
  getConversation(conversationId: string): Promise<Conversation>;
  deleteConversation(conversationId: string): Promise<null>;
  getRun(runId: string): Promise<RunInfo>;
}

export declare function httpBase(wsUrl: string): string;
export declare function sameOriginUrl(location?: { protocol: string; host: string }): string;
