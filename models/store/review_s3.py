"""The review store in an S3-compatible bucket (MinIO, AWS S3, Ceph, ...), for processes sharing no volume
(models.store.review_store.ReviewStore: the same items, documents, bounds and eviction reasons as a directory's).

Layout: `<prefix>/items/<id>/image`, then `<prefix>/items/<id>/item.json`, written in that order: an item exists
once its item.json does, so no reader sees half of one. The `minio` SDK (urllib3 underneath) is imported only when
a store opens, so the directory store and everything that imports this module for its settings never need it.
"""

from __future__ import annotations

import builtins  # the store's own `list` method shadows the builtin in its annotations
import io
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from models.errors import ReviewError, UnknownItem
from models.store.review_items import IMAGE_FILE, ITEM_FILE, ITEM_ID, ITEMS, OCTETS, STALE_STAGING_S
from models.store.review_store import ReviewStore

if TYPE_CHECKING:
    from minio import Minio

logger = logging.getLogger(__name__)

STORE_VAR = "PARTSIGHT_REVIEW_STORE"
ENDPOINT_VAR = "PARTSIGHT_REVIEW_S3_ENDPOINT"
ACCESS_KEY_VAR = "PARTSIGHT_REVIEW_S3_ACCESS_KEY"
SECRET_KEY_VAR = "PARTSIGHT_REVIEW_S3_SECRET_KEY"  # read from the file PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE names
REGION_VAR = "PARTSIGHT_REVIEW_S3_REGION"
SCHEME = "s3://"
# a store answers in milliseconds; a dead one must not hold the worker's writer (nor a start-up) for minutes
# (the SDK's own defaults: 5 minutes to connect, 5 retries)
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
RETRIES = 3
# the S3 error codes that mean "these credentials are not accepted here"
REFUSED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity"}
)
MISSING = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
JSON_TYPE = "application/json"
# S3's bucket naming rules (lower case, 3 to 63 characters, no "..", not an IP address)
BUCKET = re.compile(r"\A[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
IP_ADDRESS = re.compile(r"\A\d+\.\d+\.\d+\.\d+\Z")
PREFIX_SEGMENT = re.compile(r"\A[A-Za-z0-9._-]+\Z")
REGION = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
MEDIA_TYPE = re.compile(r"\A[\w.+-]+/[\w.+-]+\Z")


def parse_store_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://BUCKET[/PREFIX]`; the prefix has no slash at either end ("" for the bucket's top).
    ReviewError otherwise; the message never repeats what stood before the bucket (it may hold a secret)."""
    if url[: len(SCHEME)].lower() != SCHEME:
        raise ReviewError(f"{STORE_VAR} names an S3 store as s3://BUCKET[/PREFIX], got {url[:200]!r}")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ReviewError(
            f"{STORE_VAR}: an s3:// URL holds no credentials; set {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}_FILE"
        )
    if ":" in parts.netloc:
        raise ReviewError(f"{STORE_VAR}: an s3:// URL names the bucket only; the host and port go in {ENDPOINT_VAR}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ReviewError(f"{STORE_VAR} must be s3://BUCKET[/PREFIX] without a query or fragment, got {url[:200]!r}")
    bucket = parts.netloc
    if not BUCKET.match(bucket) or ".." in bucket or IP_ADDRESS.match(bucket):
        raise ReviewError(
            f"{STORE_VAR}: {bucket!r} is not an S3 bucket name (3 to 63 lower-case letters, digits, '.' and '-')"
        )
    prefix = parts.path.strip("/")
    for segment in prefix.split("/") if prefix else ():
        if segment in (".", "..") or not PREFIX_SEGMENT.match(segment):
            raise ReviewError(
                f"{STORE_VAR}: the prefix {prefix!r} must be '/'-separated names of letters, digits, '.', '_' and '-' "
                "(no empty, '.' or '..' part)"
            )
    return bucket, prefix


def parse_endpoint(raw: str) -> tuple[str, bool]:
    """(host[:port], secure) of PARTSIGHT_REVIEW_S3_ENDPOINT: `host[:port]` and `https://...` use TLS, `http://...`
    does not. ReviewError for anything else (a path, credentials, a bad port)."""
    value = raw.strip()
    usage = f"{ENDPOINT_VAR} must be host[:port], https://host[:port] or http://host[:port]"
    if "://" in value:
        scheme, _, netloc = value.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise ReviewError(f"{usage}, got a {scheme[:20]!r} URL")
        secure = scheme.lower() == "https"
        netloc = netloc.removesuffix("/")
    else:
        netloc, secure = value, True
    if "@" in netloc:
        raise ReviewError(
            f"{usage}: the endpoint holds no credentials (set {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}_FILE)"
        )
    if any(mark in netloc for mark in "/?#") or not netloc:
        raise ReviewError(f"{usage} (no path), got {value[:200]!r}")
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ReviewError(f"{usage}: bad port in {value[:200]!r}") from exc
    if not parts.hostname or (port is not None and port < 1):
        raise ReviewError(f"{usage}, got {value[:200]!r}")
    return netloc, secure


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where an S3 review store lives and how to reach it; read once from the environment (from_env)."""

    bucket: str
    prefix: str  # "" (the bucket's top) or "a/b", no slash at either end
    endpoint: str  # host[:port]
    secure: bool = True
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    region: str | None = None  # None: the SDK asks the bucket's location once
    ca_file: str | None = None  # a private CA's certificates (SSL_CERT_FILE, as the SDK reads it); None: certifi's

    @classmethod
    def from_env(cls, env: Mapping[str, str], url: str, *, secret_key: str | None) -> S3Location:
        """The location of PARTSIGHT_REVIEW_STORE=`url` (s3://...) with the PARTSIGHT_REVIEW_S3_* settings;
        `secret_key` is the content of PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE (None: not set). ReviewError naming the
        variable that is missing or malformed."""
        bucket, prefix = parse_store_url(url)
        shown = f"{STORE_VAR}={url!r}"  # parsed: it holds no credentials
        raw_endpoint = env.get(ENDPOINT_VAR, "").strip()
        if not raw_endpoint:
            raise ReviewError(f"{shown} needs {ENDPOINT_VAR}: the S3 endpoint (host:port, https://... or http://...)")
        endpoint, secure = parse_endpoint(raw_endpoint)
        access_key = env.get(ACCESS_KEY_VAR, "").strip()
        if not access_key:
            raise ReviewError(f"{shown} needs {ACCESS_KEY_VAR}: the access key of an account allowed to use the bucket")
        if secret_key is None:
            raise ReviewError(f"{shown} needs {SECRET_KEY_VAR}_FILE: the path of a file holding the secret key")
        if not secret_key.strip():
            raise ReviewError(f"{SECRET_KEY_VAR}_FILE: {env.get(f'{SECRET_KEY_VAR}_FILE')} is empty")
        region = env.get(REGION_VAR, "").strip() or None
        if region is not None and not REGION.match(region):
            raise ReviewError(f"{REGION_VAR} must be a region name such as us-east-1, got {region[:80]!r}")
        return cls(
            bucket=bucket,
            prefix=prefix,
            endpoint=endpoint,
            secure=secure,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            ca_file=env.get("SSL_CERT_FILE") or None,
        )

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"{self.url} at {self.endpoint_url}"


def connect(location: S3Location) -> Minio:
    """An S3 client for `location` with short timeouts and few retries; ReviewError when minio is missing."""
    try:  # the minio SDK only where an S3 store is named: the directory store and the bridge image go without
        import certifi  # noqa: PLC0415
        import urllib3  # noqa: PLC0415
        from minio import Minio  # noqa: PLC0415
    except ImportError as exc:
        raise ReviewError(
            f"{STORE_VAR}={location.url}: an S3 store needs the minio package (pip install minio)"
        ) from exc
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=location.ca_file or certifi.where(),
        retries=urllib3.Retry(total=RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    try:
        return Minio(
            location.endpoint,
            access_key=location.access_key,
            secret_key=location.secret_key,
            secure=location.secure,
            region=location.region,
            http_client=http,
        )
    except ValueError as exc:  # an endpoint the SDK cannot use
        raise ReviewError(f"{ENDPOINT_VAR}={location.endpoint!r}: {exc}") from exc


def transport_errors() -> tuple[type[BaseException], ...]:
    """What the SDK raises when a request fails: S3 errors, server errors, and urllib3's (refused, timed out, TLS)."""
    import urllib3.exceptions  # noqa: PLC0415 - as in connect: only with an S3 store
    from minio.error import MinioException  # noqa: PLC0415

    return (MinioException, urllib3.exceptions.HTTPError, OSError)


def missing(exc: BaseException) -> bool:
    """Whether the SDK's error says the object is not there."""
    return getattr(exc, "code", None) in MISSING


def reason(exc: BaseException) -> str:
    """One line on why a request failed, without the request's signature or credentials."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):  # an S3 error answer
        message = getattr(exc, "message", None) or ""
        if code in REFUSED:
            return f"credentials refused ({code}: {message}); check {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}_FILE"
        return f"{code}: {message}" if message else code
    cause = getattr(exc, "reason", None)  # urllib3's MaxRetryError: the last attempt's failure
    if cause is not None:
        return f"cannot reach it: {cause}"
    return str(exc) or type(exc).__name__


class S3ReviewStore(ReviewStore):
    """Items under `location`. S3 has no rename: an item appears when its item.json is written (after its image) and
    disappears when its item.json is deleted (before its image), so several processes may add, evict, list and
    label at once. Opening checks that the bucket exists and the credentials are accepted (ReviewError otherwise).
    """

    def __init__(
        self,
        location: S3Location,
        *,
        max_items: int,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
        client: Any = None,  # an SDK client (tests); None: connect(location)
    ) -> None:
        super().__init__(max_items=max_items, max_bytes=max_bytes, max_age_s=max_age_s, clock=clock)
        self.location = location
        self._client: Minio = client if client is not None else connect(location)
        self._errors = transport_errors()
        self._bucket = location.bucket
        self._items = location.key(ITEMS) + "/"
        self._check_bucket()

    def _check_bucket(self) -> None:
        try:
            exists = self._client.bucket_exists(self._bucket)
        except self._errors as exc:
            raise ReviewError(f"cannot open the review store {self.location}: {reason(exc)}") from exc
        if not exists:
            raise ReviewError(
                f"cannot open the review store {self.location}: the bucket {self._bucket!r} does not exist "
                "(create it first, e.g. `mc mb ALIAS/" + self._bucket + "`)"
            )

    def check_writable(self) -> None:
        """ReviewError unless an object can be written and deleted here (read-only credentials pass the open)."""
        probe = self.location.key(f".probe-{secrets.token_hex(4)}")
        try:
            self._put(probe, b"", OCTETS)
            self._client.remove_object(self._bucket, probe)
        except self._errors as exc:
            raise ReviewError(f"cannot write to the review store {self.location}: {reason(exc)}") from exc

    def _write_item(self, item_id: str, image: bytes, document: bytes, content_type: str) -> bool:
        """The image, then item.json: the item exists once both are written. Never False: S3 has no create-if-absent
        the SDK offers, and an id clash needs the same microsecond and 32 random bits."""
        folder = self._folder(item_id)
        try:
            self._put(folder + IMAGE_FILE, image, content_type if MEDIA_TYPE.match(content_type) else OCTETS)
            self._put(folder + ITEM_FILE, document, JSON_TYPE)  # from here on the item exists
        except self._errors as exc:
            self._discard(folder + IMAGE_FILE)  # never visible without its item.json; the sweep would take it too
            raise ReviewError(f"cannot write a review item to {self.location}: {reason(exc)}") from exc
        return True

    def _ids(self) -> builtins.list[str]:
        return [item_id for item_id, _size in self._scan()]

    def _scan(self) -> builtins.list[tuple[str, int]]:
        items, _ = self._listing()
        return items

    def _scan_and_tidy(self) -> builtins.list[tuple[str, int]]:
        """One listing that also finds the images writers killed mid-write left behind, and removes them."""
        items, orphans = self._listing()
        for item_id in orphans:
            logger.info("removing the image of review item %s, left without its item.json", item_id)
            self._discard(self._folder(item_id) + IMAGE_FILE)
        return items

    def _remove(self, item_id: str) -> bool:
        """Delete an item: its item.json (it is gone from then on), then its image; False if it was gone already."""
        folder = self._folder(item_id)
        try:
            self._client.stat_object(self._bucket, folder + ITEM_FILE)
            self._client.remove_object(self._bucket, folder + ITEM_FILE)
        except self._errors as exc:
            if missing(exc):  # another process evicted it first (S3 deletes say nothing of that: looked first)
                return False
            raise ReviewError(f"cannot evict review item {item_id} from {self.location}: {reason(exc)}") from exc
        self._discard(folder + IMAGE_FILE)  # one left behind is swept as an orphan later
        return True

    def _read_file(self, item_id: str, name: str) -> bytes:
        try:
            response = self._client.get_object(self._bucket, self._folder(item_id) + name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        except self._errors as exc:
            if missing(exc):
                raise UnknownItem(f"no review item {item_id!r}") from exc
            raise ReviewError(f"review item {item_id}: unreadable {name}: {reason(exc)}") from exc

    def _replace(self, item_id: str, document: bytes) -> None:
        """Rewrite item.json (the last of two concurrent writers wins, as in the directory store)."""
        folder = self._folder(item_id)
        try:
            self._put(folder + ITEM_FILE, document, JSON_TYPE)
            # evicted between the read and the write? then that write made its item.json again: take it back
            self._client.stat_object(self._bucket, folder + IMAGE_FILE)
        except self._errors as exc:
            if missing(exc):
                self._discard(folder + ITEM_FILE)
                raise UnknownItem(f"no review item {item_id!r}") from exc
            raise ReviewError(f"cannot update review item {item_id}: {reason(exc)}") from exc

    def _folder(self, item_id: str) -> str:
        return f"{self._items}{item_id}/"

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(self._bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def _discard(self, key: str) -> None:
        """Delete one object, best effort (deleting one that is not there is no error in S3)."""
        try:
            self._client.remove_object(self._bucket, key)
        except self._errors as exc:
            logger.warning("could not remove %s from the review store %s: %s", key, self.location, reason(exc))

    def _listing(self) -> tuple[builtins.list[tuple[str, int]], builtins.list[str]]:
        """(id, image bytes) of every item (an item.json), oldest first, from one listing; and the ids of images
        left without their item.json for an hour (by a process killed between the two writes)."""
        records: set[str] = set()
        images: dict[str, tuple[int, float]] = {}
        try:
            for entry in self._client.list_objects(self._bucket, prefix=self._items, recursive=True):
                item_id, _, leaf = (entry.object_name or "")[len(self._items) :].partition("/")
                if not ITEM_ID.match(item_id):
                    continue  # not an item (a stray object someone put there): left alone
                if leaf == ITEM_FILE:
                    records.add(item_id)
                elif leaf == IMAGE_FILE:
                    modified = entry.last_modified.timestamp() if entry.last_modified else time.time()
                    images[item_id] = (entry.size or 0, modified)
        except self._errors as exc:
            raise ReviewError(f"cannot list the review store {self.location}: {reason(exc)}") from exc
        # an item without its image (evicted under an operator's label) still takes a place until it is evicted
        items = [(item_id, images.get(item_id, (0, 0.0))[0]) for item_id in sorted(records)]
        stale_before = time.time() - STALE_STAGING_S  # the server's times against ours: an hour is slack enough
        orphans = [item_id for item_id, (_, at) in images.items() if item_id not in records and at < stale_before]
        return items, orphans
