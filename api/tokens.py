"""Bearer tokens and their scopes, from PARTSIGHT_API_TOKENS_FILE: one `token scope[,scope]` a line, # comments.

Scopes: `recognize` (POST /v1/recognize), `enrol` (products and enrolments), `admin` (everything, model
versions and the review queue too). Tokens are kept as their SHA-256 only, and looked up by it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.errors import SettingsError

RECOGNIZE, ENROL, ADMIN = "recognize", "enrol", "admin"
SCOPES = (RECOGNIZE, ENROL, ADMIN)
MIN_TOKEN_CHARS = 16  # a token is a password: "secret" is refused at start-up
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")  # RFC 6750


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenTable:
    """Scopes by token digest; `source` names the file, for logs."""

    by_digest: Mapping[str, frozenset[str]]
    source: str = "tokens"

    def __len__(self) -> int:
        return len(self.by_digest)

    def scopes_of(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None for a token not in the table."""
        return self.by_digest.get(_digest(token))


def allows(scopes: frozenset[str], needed: str | None) -> bool:
    """Whether `scopes` grant `needed` (None: any valid token); admin grants every scope."""
    return needed is None or ADMIN in scopes or needed in scopes


def parse_tokens(text: str, source: str = "tokens") -> TokenTable:
    """Parse a tokens file; SettingsError names the line of any problem (never the token itself)."""
    table: dict[str, frozenset[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}, line {number}"
        fields = line.split()
        if len(fields) != 2:
            raise SettingsError(f"{where}: expected `token scope[,scope]`, got {len(fields)} field(s)")
        token, scope_list = fields
        if len(token) < MIN_TOKEN_CHARS:
            raise SettingsError(f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters")
        if not set(token) <= _TOKEN_CHARS:
            raise SettingsError(f"{where}: a token holds letters, digits and -._~+/= only")
        scopes = [scope.strip() for scope in scope_list.split(",")]
        unknown = [scope for scope in scopes if scope not in SCOPES]
        if unknown:
            raise SettingsError(f"{where}: unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
        digest = _digest(token)
        if digest in table:
            raise SettingsError(f"{where}: this token is listed already")
        table[digest] = frozenset(scopes)
    if not table:
        raise SettingsError(f"{source} lists no token; add lines `token scope[,scope]` or unset the variable")
    return TokenTable(table, source)


def load_tokens(path: Path) -> TokenTable:
    """The tokens of a named file: a missing or unreadable one is a SettingsError, never an open API."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SettingsError(f"PARTSIGHT_API_TOKENS_FILE: {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"PARTSIGHT_API_TOKENS_FILE: cannot read {path}: {exc}") from exc
    return parse_tokens(text, str(path))
