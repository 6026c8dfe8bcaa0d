// Entry point of the page served at /: sign in (a user name in dev mode, a token in JWT mode, or a
// token from the hosting app), then start the chat. docs/webchat.md.
//
// Hosting app hook: define `window.chatgwGetToken` (a function returning a token or a promise of
// one; called before every connection, so it can hand out fresh JWTs) or `window.chatgwToken` (a
// string) in a script that runs before this module. Tokens never go in a URL.

import { ChatApp } from "./chat.js";
import { credentials } from "./storage.js";

const USER_RE = /^[A-Za-z0-9_.@-]{1,64}$/;
const $ = (id) => document.getElementById(id);

function authMode() {
  return document.querySelector('meta[name="chatgw-auth"]')?.content === "jwt" ? "jwt" : "dev";
}

function hostedToken() {
  if (typeof window.chatgwGetToken === "function") return () => window.chatgwGetToken();
  if (typeof window.chatgwToken === "string" && window.chatgwToken) return () => window.chatgwToken;
  return null;
}

/** A JWT's `sub`, to show who is signed in (display only: the gateway does the checking). */
function tokenSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const sub = JSON.parse(atob(payload)).sub;
    return typeof sub === "string" ? sub : "signed in";
  } catch {
    return "signed in";
  }
}

function signOut(error) {
  // Start again from the sign-in form, saying why when the gateway refused the token.
  credentials.forget();
  credentials.refusal = error ? "The gateway refused this sign-in. Check the name or token and try again." : null;
  window.location.reload();
}

function start(options) {
  const app = new ChatApp({ ...options, onRefused: signOut });
  window.chatgwApp = app; // for the curious, in the console
  app.start();
}

function showSignin(mode) {
  $("signin").hidden = false;
  $("app").hidden = true;
  const dev = mode === "dev";
  $("user-field").hidden = !dev;
  $("token-field").hidden = dev;
  $("signin-hint").textContent = dev
    ? "Development mode: any name signs you in as that user (token dev:<name>)."
    : "Paste a token (a JWT) issued for this gateway. It is kept in this tab only.";
  $("signin-error").textContent = credentials.refusal || "";
  credentials.refusal = null;
  const field = dev ? $("signin-user") : $("signin-token");
  field.focus();
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = field.value.trim();
    if (dev && !USER_RE.test(value)) {
      $("signin-error").textContent = "A name is 1 to 64 letters, digits or _ . @ -";
      return;
    }
    if (!value) {
      $("signin-error").textContent = "Paste a token first.";
      return;
    }
    if (dev) credentials.devUser = value;
    else credentials.token = value;
    boot(mode);
  });
}

function boot(mode) {
  const hosted = hostedToken();
  if (hosted) {
    start({ getToken: hosted, who: "", user: "hosted" });
  } else if (mode === "dev" && credentials.devUser) {
    const user = credentials.devUser;
    start({ getToken: () => `dev:${user}`, who: user, user });
  } else if (mode === "jwt" && credentials.token) {
    start({ getToken: () => credentials.token, who: tokenSubject(credentials.token), user: "jwt" });
  } else {
    showSignin(mode);
  }
}

boot(authMode());
