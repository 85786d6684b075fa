"""Product catalogs: CSV or JSON records with at least `product`, `name` and `category`.

Every further field travels into results as it is.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from models.errors import CatalogError

REQUIRED_FIELDS = ("product", "name", "category")
Catalog = dict[str, dict[str, Any]]


def _records_from_json(path: Path) -> list[Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path}: not valid UTF-8 JSON: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("products"), list):
        document = document["products"]
    if not isinstance(document, list):
        raise CatalogError(f'{path}: expected a list of product records or {{"products": [...]}}')
    return document


def _records_from_csv(path: Path) -> list[Any]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in REQUIRED_FIELDS if name not in (reader.fieldnames or [])]
            if missing:
                raise CatalogError(f"{path}: the header lacks column(s) {', '.join(missing)}")
            return list(reader)
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise CatalogError(f"{path}: malformed CSV: {exc}") from exc


def parse_records(records: list[Any], source: str) -> Catalog:
    catalog: Catalog = {}
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise CatalogError(f"{source}: record {index} is not an object")
        for name in REQUIRED_FIELDS:
            value = record.get(name)
            if not isinstance(value, str) or not value.strip():
                raise CatalogError(f"{source}: record {index} needs a non-empty string {name!r}")
        product = record["product"].strip()
        if product in catalog:
            raise CatalogError(f"{source}: product {product!r} appears twice")
        catalog[product] = {key: (value.strip() if isinstance(value, str) else value) for key, value in record.items()}
    if not catalog:
        raise CatalogError(f"{source}: the catalog has no products")
    return catalog


def load_catalog(path: Path) -> Catalog:
    """Read a catalog file; CatalogError names the file and the record for anything wrong."""
    if not path.is_file():
        raise CatalogError(f"catalog file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        records = _records_from_json(path)
    elif suffix == ".csv":
        records = _records_from_csv(path)
    else:
        raise CatalogError(f"{path}: catalog must be .csv or .json")
    return parse_records(records, str(path))


def categories_of(catalog: Catalog) -> dict[str, str]:
    """Each product's category."""
    return {product: str(record["category"]) for product, record in catalog.items()}
