// The token form: the bearer token this browser tab sends, set or forgotten.

import { saveToken, token } from "./api.js";
import { $ } from "./dom.js";
import { refreshNow } from "./loop.js";
import { say } from "./status.js";

export function setupToken() {
  const input = $("token");
  input.value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    saveToken(value);
    input.setAttribute("aria-invalid", "false");
    say(value ? "Token set for this browser tab." : "No token: requests go without one.", "ok");
    refreshNow();
  });
  $("token-clear").addEventListener("click", () => {
    saveToken("");
    input.value = "";
    say("Token forgotten.", "ok");
  });
}
