// The "New product" form: a catalog record and its photos, or more photos of a known product, sent for enrolment.

import { ApiError, api, enc } from "./api.js";
import { refreshCatalog } from "./catalog.js";
import { $ } from "./dom.js";
import { track } from "./enrolments.js";
import { fail, say } from "./status.js";

function parseExtra(text) {
  const trimmed = text.trim();
  if (!trimmed) return {};
  if (trimmed.startsWith("{")) {
    const parsed = JSON.parse(trimmed); // a SyntaxError is shown to the operator
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
    return parsed;
  }
  const extra = {};
  for (const [index, line] of trimmed.split("\n").entries()) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 1) throw new Error(`line ${index + 1} is not "key: value"`);
    extra[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return extra;
}

export function setupProductForm() {
  const form = $("product-form");
  const known = $("product-known");
  known.addEventListener("change", () => {
    for (const id of ["product-name", "product-category"]) {
      $(id).required = !known.checked;
      $(id).disabled = known.checked;
    }
    $("product-extra").disabled = known.checked;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const product = $("product-id").value.trim();
    const files = [...$("product-photos").files];
    if (!files.length) {
      say("Choose one or more photos of the product.", "error");
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      if (!known.checked) {
        let extra;
        try {
          extra = parseExtra($("product-extra").value);
        } catch (exc) {
          say(`Further fields: ${exc.message}.`, "error");
          return;
        }
        const record = { ...extra, product, name: $("product-name").value.trim(), category: $("product-category").value.trim() };
        say(`Adding ${product} to the catalog…`, "busy");
        try {
          await api("/v1/products", { method: "POST", json: record });
          refreshCatalog().catch(() => {}); // the new product is a label the review queue may use now
        } catch (exc) {
          if (exc instanceof ApiError && exc.status === 409) {
            fail(`Adding ${product}`, exc);
            say(`${$("status").textContent} Tick "Known product" to add photos to it.`, "error");
            return;
          }
          throw exc;
        }
      }
      const body = new FormData();
      for (const file of files) body.append("photo", file, file.name);
      say(`Uploading ${files.length} photo(s) of ${product}…`, "busy");
      const doc = await api(`/v1/products/${enc(product)}/photos`, { method: "POST", body });
      track(String(doc.enrolment), product);
      say(`Enrolment ${doc.enrolment} of ${product} queued (${files.length} photo(s)).`, "ok");
      form.reset();
      known.dispatchEvent(new Event("change"));
    } catch (exc) {
      fail(`Enrolling ${product}`, exc);
    } finally {
      submit.disabled = false;
    }
  });
}
