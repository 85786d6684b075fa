// The API: fetch helpers over /v1, the bearer token this tab keeps, and images fetched with it.

const TOKEN_KEY = "partsight.token";
// the API's root, so the page also works behind a reverse proxy that mounts it under a path prefix
const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// keeps the token for this browser tab only; an empty one is forgotten
export function saveToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function api(path, { method = "GET", json, body, contentType, as = "json" } = {}) {
  const headers = new Headers();
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  } else if (contentType) {
    headers.set("Content-Type", contentType);
  }
  let response;
  try {
    response = await fetch(BASE + path, { method, headers, body, cache: "no-store" });
  } catch (exc) {
    throw new ApiError(0, "network", `cannot reach the API (${exc.message})`);
  }
  if (!response.ok) {
    let code = `http_${response.status}`;
    let message = response.statusText || "request failed";
    try {
      const doc = await response.json();
      if (doc && doc.error) {
        code = doc.error.code || code;
        message = doc.error.message || message;
      }
    } catch {
      // not JSON (a proxy's error page): keep the status text
    }
    throw new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  }
  if (as === "blob") return response.blob();
  if (response.status === 204) return null;
  return response.json();
}

export const enc = encodeURIComponent;

// a list the API may send bare or wrapped ({"items": [...]}, {"products": [...]})
export function listOf(doc, key) {
  if (Array.isArray(doc)) return doc;
  if (doc && Array.isArray(doc[key])) return doc[key];
  if (doc && typeof doc[key] === "object" && doc[key] !== null) return Object.values(doc[key]);
  return [];
}

// an image the API serves only with the token (review photos, report plots), shown from a blob: URL;
// resolves to that URL (the caller revokes it) or null when the image could not be fetched
export async function loadImage(img, path, alt) {
  try {
    const blob = await api(path, { as: "blob" });
    const url = URL.createObjectURL(blob);
    img.src = url;
    return url;
  } catch (exc) {
    img.alt = `${alt} (image unavailable: ${exc.message})`;
    img.classList.add("broken");
    return null;
  }
}
