// The status line: what the page is doing, and what went wrong in words an operator can act on.

import { ApiError } from "./api.js";
import { $ } from "./dom.js";

export function say(text, kind = "ok") {
  const line = $("status");
  line.textContent = text;
  line.dataset.kind = kind;
  line.setAttribute("role", kind === "error" ? "alert" : "status");
}

export function explain(what, exc) {
  if (!(exc instanceof ApiError)) return `${what} failed: ${exc && exc.message ? exc.message : exc}`;
  if (exc.status === 401) {
    return `${what}: not authorised (401). Enter a valid API token above and press "Use token". (${exc.message})`;
  }
  if (exc.status === 403) {
    return `${what}: this token does not have the right for that (403 forbidden). Ask for a token with that scope. (${exc.message})`;
  }
  const retry = exc.retryAfter ? ` Try again in ${exc.retryAfter} s.` : "";
  const http = exc.status ? `, HTTP ${exc.status}` : "";
  return `${what} failed: ${exc.message} (${exc.code}${http}).${retry}`;
}

export function fail(what, exc) {
  const auth = exc instanceof ApiError && (exc.status === 401 || exc.status === 403);
  $("token").setAttribute("aria-invalid", auth ? "true" : "false");
  say(explain(what, exc), "error");
}
