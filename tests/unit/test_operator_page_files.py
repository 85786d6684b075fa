"""The operator page's static files keep their promises without a browser: nothing loaded from elsewhere, nothing
the strict CSP refuses, no server text written as HTML, a label for every control, every element the script looks
up present in the page, every module it imports there and served. (tests/integration/test_operator_page.py drives
the page in a real Chromium; `npx eslint api/static` lints the modules.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
MODULES = sorted((STATIC / "js").glob("*.js"))  # the page's script: ES modules, main.js the entry
FILES = ("index.html", "ui.css", *(f"js/{module.name}" for module in MODULES))
IMPORT = re.compile(r"""^(?:import|export)\b[^;]*?\bfrom\s*"([^"]+)";?$|^import\s*"([^"]+)";?$""", re.MULTILINE)


def script() -> str:
    """Every module's text, one after the other."""
    return "\n".join(module.read_text(encoding="utf-8") for module in MODULES)


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.labelled: set[str] = set()  # ids a <label for> names
        self.button_text: dict[int, str] = {}
        self._button: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attributes))
        if tag == "label" and "for" in attributes:
            self.labelled.add(attributes["for"])
        if tag == "button":
            self._button = len(self.elements) - 1
            self.button_text[self._button] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self.button_text[self._button] += data


@pytest.fixture(scope="module")
def page() -> Page:
    parser = Page()
    parser.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    return parser


@pytest.mark.parametrize("name", FILES)
def test_nothing_is_loaded_from_another_host(name: str) -> None:
    text = (STATIC / name).read_text(encoding="utf-8")
    assert not re.search(r"""(https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}|@import|url\(""", text), name


def test_scripts_and_styles_are_files_the_csp_allows(page: Page) -> None:
    for tag, attributes in page.elements:
        assert "style" not in attributes, (tag, attributes)  # inline styles are refused by style-src 'self'
        assert not [name for name in attributes if name.startswith("on")], (tag, attributes)
        if tag == "script":
            assert attributes.get("src", "").startswith("/ui/"), attributes
        if tag == "link":
            assert attributes["href"].startswith(("/ui/", "data:")), attributes
    assert "<style" not in (STATIC / "index.html").read_text(encoding="utf-8")


def test_the_page_loads_its_entry_module_from_the_page_route(page: Page) -> None:
    scripts = [attributes for tag, attributes in page.elements if tag == "script"]
    assert scripts == [{"type": "module", "src": "/ui/js/main.js"}], scripts
    assert "main.js" in {module.name for module in MODULES}


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.name)
def test_modules_import_only_modules_beside_them(module: Path) -> None:
    """Relative paths with their .js (the browser resolves nothing else), to files that are there: no bare package
    names, no other host, no folder the page route does not serve."""
    text = module.read_text(encoding="utf-8")
    assert "import(" not in text, "no dynamic import: every module is named where it is used"
    for match in IMPORT.finditer(text):
        target = match.group(1) or match.group(2)
        assert re.fullmatch(r"\./[A-Za-z0-9][A-Za-z0-9._-]*\.js", target), (module.name, target)
        assert (module.parent / target).is_file(), (module.name, target)


def test_every_module_is_reached_from_the_entry() -> None:
    reached: set[str] = set()
    todo = ["main.js"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        text = (STATIC / "js" / name).read_text(encoding="utf-8")
        todo += [(m.group(1) or m.group(2)).removeprefix("./") for m in IMPORT.finditer(text)]
    assert reached == {module.name for module in MODULES}, sorted({module.name for module in MODULES} - reached)


def test_server_text_never_becomes_html() -> None:
    text = script()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in text, sink


def test_every_control_has_an_accessible_name_and_a_test_id(page: Page) -> None:
    for index, (tag, attributes) in enumerate(page.elements):
        if tag in ("input", "textarea", "select"):
            named = attributes.get("id") in page.labelled or "aria-label" in attributes
            inside_label = tag == "input" and attributes.get("type") == "checkbox"  # wrapped in its <label>
            assert named or inside_label, (tag, attributes)
            assert "data-testid" in attributes, (tag, attributes)
        if tag == "button":
            assert page.button_text[index].strip() or "aria-label" in attributes, attributes
            assert "data-testid" in attributes, attributes


def test_every_element_the_script_looks_up_is_in_the_page(page: Page) -> None:
    ids = {attributes["id"] for _, attributes in page.elements if "id" in attributes}
    looked_up = set(re.findall(r"""\$\("([A-Za-z0-9_-]+)"\)""", script()))
    assert looked_up, "the script looks elements up with $(id)"
    assert looked_up <= ids, sorted(looked_up - ids)
    for name in ("catalog-products", "catalog-categories"):  # the <datalist>s the inputs' list= names
        assert name in ids
