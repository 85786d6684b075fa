// The catalog: the products the review queue may label with, offered in the page's <datalist>s.

import { api, listOf } from "./api.js";
import { $, el } from "./dom.js";

export const catalog = new Map(); // product id -> record

export async function refreshCatalog() {
  const records = listOf(await api("/v1/products"), "products");
  catalog.clear();
  for (const record of records) if (record && record.product) catalog.set(String(record.product), record);
  const products = $("catalog-products");
  products.replaceChildren(
    ...[...catalog.values()]
      .sort((a, b) => String(a.product).localeCompare(String(b.product)))
      .map((r) =>
        el("option", {
          value: r.product,
          label: `${r.name ?? r.product} · ${r.category ?? "?"}${r.enrolled === false ? " · no photos yet" : ""}`,
        }),
      ),
  );
  const categories = [...new Set([...catalog.values()].map((r) => r.category).filter(Boolean))].sort();
  $("catalog-categories").replaceChildren(...categories.map((c) => el("option", { value: c })));
}

export function productName(product) {
  const record = catalog.get(product);
  return record && record.name ? record.name : null;
}
