// Error codes, run states and connection states in words (codes: docs/protocol.md, docs/errors.md).

const ERRORS = {
  conversation_busy:
    "This conversation is still answering. Stop the answer, wait for it to end, or pick " +
    "“queue my message” or “interrupt the answer” next to Send.",
  on_busy_not_allowed:
    "This gateway does not allow that choice for a conversation that is still answering. Pick another " +
    "one next to Send, or wait for the answer to end.",
  too_many_runs: "You already have as many answers in progress as allowed. Wait for one to finish.",
  too_many_follows: "This window follows as many answers as it may. Wait for one to finish.",
  too_many_sockets: "You have too many chatgw windows open. Close one and this one reconnects.",
  content_too_long: "Your message is too long for this gateway. Shorten it and send it again.",
  conversation_not_found: "This conversation no longer exists: it expired or was deleted.",
  run_not_found: "This answer is no longer available: it expired or was deleted.",
  unavailable: "The service is unavailable for a moment (its store is unreachable). Try again shortly.",
  internal: "Something went wrong inside chatgw.",
  unauthorized: "Your sign-in was refused. Sign in again.",
  run_timeout: "The answer took too long and was ended.",
  worker_lost: "The worker writing this answer was lost, more than once. Retry to ask again.",
  store_unavailable: "The worker writing this answer lost its store. Retry to ask again.",
  agent_error: "The agent failed while writing this answer.",
  llm_unauthorized: "The language model refused chatgw's credentials (check CHATGW_LLM_API_KEY).",
  llm_rate_limited: "The language model is rate-limiting chatgw. Retry in a moment.",
  llm_unavailable: "The language model could not be reached.",
  llm_timeout: "The language model did not answer in time.",
  llm_bad_response: "The language model's answer could not be used.",
  not_found: "This gateway has no such page or resource.",
  timeout: "The gateway did not answer in time.",
  closed: "The connection was closed.",
};

// A request this page built wrongly: the gateway's own message says best what was wrong.
const REFUSED_AS_SENT = new Set([
  "bad_frame",
  "bad_json",
  "unknown_type",
  "already_authenticated",
  "bad_request",
  "method_not_allowed",
]);

/** A ChatgwError, an error frame or a run.failed `error` → one sentence for people. */
export function describeError(error) {
  if (!error) return "";
  const code = error.code || "internal";
  if (code === "rate_limited") {
    const ms = error.retryAfterMs ?? error.retry_after_ms ?? error.frame?.retry_after_ms;
    const wait = typeof ms === "number" ? ` Try again in ${Math.max(1, Math.ceil(ms / 1000))} s.` : " Wait a moment.";
    return `You are sending messages faster than this gateway allows.${wait}`;
  }
  if (code === "budget_exceeded") {
    const resetsAt = error.frame?.resets_at ?? error.resets_at;
    const when =
      typeof resetsAt === "number"
        ? ` It resets at ${new Date(resetsAt * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" })}.`
        : "";
    return `You have used today's token budget.${when}`;
  }
  if (ERRORS[code]) return ERRORS[code];
  if (REFUSED_AS_SENT.has(code)) return `The gateway refused the request: ${error.message}`;
  if (code.startsWith("llm_")) return `The language model failed (${code}).`;
  if (code.startsWith("http_")) return error.message || `The gateway answered HTTP ${code.slice(5)}.`;
  return error.message || `Error: ${code}`;
}

/** The connection indicator's words for a ChatgwClient state. */
export function describeConnection(state) {
  switch (state.status) {
    case "connected":
      return state.resuming ? `Connected · resuming ${state.resuming} answer${state.resuming > 1 ? "s" : ""}` : "Connected";
    case "connecting":
    case "idle":
      return "Connecting…";
    case "waiting": {
      const seconds = Math.max(0.1, (state.retryInMs || 0) / 1000).toFixed(1);
      return `Reconnecting in ${seconds} s`;
    }
    case "refused":
      return "Signed out: the token was refused";
    default:
      return "Disconnected";
  }
}

export function describeRetrying(event) {
  const why =
    {
      worker_shutdown: "its worker was shutting down",
      store_unavailable: "its worker lost its store for a while",
    }[event.reason] || "its worker was lost";
  return `The answer is being written again (attempt ${event.attempt}): ${why}.`;
}
