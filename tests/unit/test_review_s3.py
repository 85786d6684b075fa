"""The S3 review store's settings and messages without a server: the s3:// URL, the endpoint, the
PARTSIGHT_REVIEW_S3_* variables (each missing one named), the worker's and the API's readings, errors at start
(missing bucket, refused credentials, an endpoint that does not answer), and the directory store never loading minio.
The store itself runs against a real S3 server in tests/integration/test_review_s3.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api.settings import ApiSettings
from broker.errors import SettingsError
from models.errors import ReviewError
from models.store.review_location import ReviewSettings, is_s3, open_review_store
from models.store.review_s3 import S3Location, S3ReviewStore, parse_endpoint, parse_store_url
from partsight.embedded import free_port
from worker.settings import WorkerSettings
from worker.settings import open_review_store as open_for_worker

ROOT = Path(__file__).resolve().parents[2]
BOUNDS: dict[str, Any] = {"max_items": 10, "max_bytes": 1 << 20, "max_age_s": 3600.0}


def s3_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    secret = tmp_path / "s3_secret"
    secret.write_text("s3cr3t-value\n")
    env = {
        "PARTSIGHT_REVIEW_STORE": "s3://partsight-review/review",
        "PARTSIGHT_REVIEW_S3_ENDPOINT": "http://minio:9000",
        "PARTSIGHT_REVIEW_S3_ACCESS_KEY": "partsight",
        "PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE": str(secret),
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value != "<unset>"}


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://partsight-review/review", "partsight-review", "review"),
        ("S3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://my.bucket-1/plant/line-1/", "my.bucket-1", "plant/line-1"),
    ],
)
def test_an_s3_url_names_a_bucket_and_a_prefix(url: str, bucket: str, prefix: str) -> None:
    assert parse_store_url(url) == (bucket, prefix) and is_s3(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://partsight:hunter2@bucket/review", "holds no credentials"),
        ("s3://minio:9000/review", "host and port go in PARTSIGHT_REVIEW_S3_ENDPOINT"),
        ("s3://bucket/review?versionId=1", "without a query"),
        ("s3://Bucket/review", "not an S3 bucket name"),
        ("s3://ab/review", "not an S3 bucket name"),
        ("s3://10.0.0.1/review", "not an S3 bucket name"),
        ("s3://a..b/review", "not an S3 bucket name"),
        ("s3://", "not an S3 bucket name"),
        ("s3://bucket/../escape", "no empty, '.' or '..' part"),
        ("s3://bucket/a//b", "no empty, '.' or '..' part"),
        ("s3://bucket/a b", "letters, digits"),
    ],
)
def test_a_bad_s3_url_is_refused_naming_the_variable_and_never_echoing_a_secret(url: str, message: str) -> None:
    with pytest.raises(ReviewError, match="PARTSIGHT_REVIEW_STORE") as caught:
        parse_store_url(url)
    assert message in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "endpoint", "secure"),
    [
        ("minio:9000", "minio:9000", True),  # no scheme: TLS
        ("http://minio:9000", "minio:9000", False),
        ("HTTP://127.0.0.1:9000/", "127.0.0.1:9000", False),
        ("https://s3.eu-central-1.amazonaws.com", "s3.eu-central-1.amazonaws.com", True),
        ("  https://[::1]:9000  ", "[::1]:9000", True),
    ],
)
def test_an_endpoint_is_a_host_and_port_with_tls_unless_http(raw: str, endpoint: str, secure: bool) -> None:
    assert parse_endpoint(raw) == (endpoint, secure)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ftp://minio:21", "got a 'ftp' URL"),
        ("http://minio:9000/bucket", "no path"),
        ("minio:9000/bucket", "no path"),
        ("http://partsight:hunter2@minio:9000", "holds no credentials"),
        ("minio:http", "bad port"),
        ("http://", "no path"),
        ("http://:9000", "PARTSIGHT_REVIEW_S3_ENDPOINT must be"),
    ],
)
def test_a_bad_endpoint_is_refused_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ReviewError, match="PARTSIGHT_REVIEW_S3_ENDPOINT must be") as caught:
        parse_endpoint(raw)
    assert message in str(caught.value) and "hunter2" not in str(caught.value)


def test_the_settings_make_a_location_that_never_shows_its_secret(tmp_path: Path) -> None:
    env = s3_env(tmp_path, PARTSIGHT_REVIEW_S3_REGION="eu-central-1")
    location = WorkerSettings.from_env(env).review.location
    assert isinstance(location, S3Location)
    assert (location.bucket, location.prefix, location.endpoint, location.secure) == (
        "partsight-review",
        "review",
        "minio:9000",
        False,
    )
    assert (location.access_key, location.secret_key, location.region) == ("partsight", "s3cr3t-value", "eu-central-1")
    assert (
        location.key("items") == "review/items" and str(location) == "s3://partsight-review/review at http://minio:9000"
    )
    assert "s3cr3t" not in repr(location) and "s3cr3t" not in str(location)
    top = WorkerSettings.from_env(s3_env(tmp_path, PARTSIGHT_REVIEW_STORE="s3://bucket")).review.location
    assert isinstance(top, S3Location) and top.key("items") == "items" and top.url == "s3://bucket"
    assert top.region is None and top.secure is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PARTSIGHT_REVIEW_S3_ENDPOINT": "<unset>"}, "needs PARTSIGHT_REVIEW_S3_ENDPOINT"),
        ({"PARTSIGHT_REVIEW_S3_ENDPOINT": " "}, "needs PARTSIGHT_REVIEW_S3_ENDPOINT"),
        ({"PARTSIGHT_REVIEW_S3_ACCESS_KEY": "<unset>"}, "needs PARTSIGHT_REVIEW_S3_ACCESS_KEY"),
        ({"PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE": "<unset>"}, "needs PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE"),
        (
            {"PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE": "/nonexistent/secret"},
            "PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE: cannot read",
        ),
        ({"PARTSIGHT_REVIEW_S3_REGION": "eu central"}, "PARTSIGHT_REVIEW_S3_REGION must be a region name"),
        ({"PARTSIGHT_REVIEW_S3_ENDPOINT": "ftp://minio"}, "PARTSIGHT_REVIEW_S3_ENDPOINT must be"),
        ({"PARTSIGHT_REVIEW_STORE": "s3://Partsight"}, "not an S3 bucket name"),
    ],
)
def test_a_missing_or_bad_s3_setting_is_a_settings_error_naming_it(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    env = s3_env(tmp_path, **overrides)
    for settings in (WorkerSettings, ApiSettings):  # the worker and the API read it alike
        with pytest.raises(SettingsError, match=message):
            settings.from_env({**env, "PARTSIGHT_MODEL_DIR": str(tmp_path / "store")})


def test_an_empty_secret_file_is_named(tmp_path: Path) -> None:
    env = s3_env(tmp_path)
    Path(env["PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE"]).write_text("\n")
    with pytest.raises(SettingsError, match=r"PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE: .*s3_secret is empty"):
        WorkerSettings.from_env(env)


def test_the_api_reads_the_s3_store_as_the_workers_do(tmp_path: Path) -> None:
    env = s3_env(tmp_path)
    env["PARTSIGHT_MODEL_DIR"] = str(tmp_path / "store")
    assert ApiSettings.from_env(env).review == WorkerSettings.from_env(env).review
    with pytest.raises(SettingsError, match=r"must be a directory or s3://BUCKET\[/PREFIX\]"):
        ReviewSettings.from_env({"PARTSIGHT_REVIEW_STORE": "https://minio.plant/review"}, tmp_path)


class FakeClient:
    """An SDK client whose bucket check answers `exists`, or raises `error`."""

    def __init__(self, exists: bool = True, error: BaseException | None = None) -> None:
        self.exists, self.error = exists, error

    def bucket_exists(self, bucket: str) -> bool:
        if self.error is not None:
            raise self.error
        return self.exists


def location(**fields: Any) -> S3Location:
    values: dict[str, Any] = {
        "bucket": "partsight-review",
        "prefix": "review",
        "endpoint": "minio:9000",
        "secure": False,
        "access_key": "partsight",
        "secret_key": "s3cr3t-value",
        **fields,
    }
    return S3Location(**values)


def s3_error(code: str, message: str) -> BaseException:
    from minio.error import S3Error

    return S3Error(None, code, message, "/partsight-review", "req-1", "host-1")  # type: ignore[arg-type]


def test_a_missing_bucket_is_refused_at_start_naming_it() -> None:
    with pytest.raises(ReviewError, match=r"the bucket 'partsight-review' does not exist \(create it first"):
        S3ReviewStore(location(), client=FakeClient(exists=False), **BOUNDS)


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"])
def test_refused_credentials_are_said_so_at_start(code: str) -> None:
    with pytest.raises(ReviewError) as caught:
        S3ReviewStore(location(), client=FakeClient(error=s3_error(code, "nope")), **BOUNDS)
    text = str(caught.value)
    assert text.startswith("cannot open the review store s3://partsight-review/review at http://minio:9000: ")
    assert f"credentials refused ({code}: nope); check PARTSIGHT_REVIEW_S3_ACCESS_KEY" in text
    assert "s3cr3t" not in text


def test_bounds_are_checked_before_any_request() -> None:
    with pytest.raises(ReviewError, match="review bounds must be positive"):
        S3ReviewStore(location(), client=FakeClient(error=AssertionError("no request")), **{**BOUNDS, "max_items": 0})


def test_an_endpoint_that_does_not_answer_stops_the_worker_within_seconds(tmp_path: Path) -> None:
    import time

    closed = free_port()  # nothing listens there
    env = s3_env(tmp_path, PARTSIGHT_REVIEW_S3_ENDPOINT=f"http://127.0.0.1:{closed}")
    settings = WorkerSettings.from_env(env)
    started = time.monotonic()
    with pytest.raises(SettingsError) as caught:
        open_for_worker(settings)
    assert time.monotonic() - started < 15  # few retries, short timeouts: not the SDK's minutes
    text = str(caught.value)
    assert text.startswith(
        f"PARTSIGHT_REVIEW_STORE: cannot open the review store s3://partsight-review/review at http://127.0.0.1:{closed}"
    )
    assert "cannot reach it" in text and text.endswith("; or set PARTSIGHT_REVIEW_SAMPLE=0")
    sampled_out = WorkerSettings.from_env({**env, "PARTSIGHT_REVIEW_SAMPLE": "0"})
    assert open_for_worker(sampled_out) is None  # the queue off: the bucket is never asked


def test_the_factory_opens_a_directory_for_a_path(tmp_path: Path) -> None:
    store = open_review_store(tmp_path / "review", **BOUNDS)
    assert type(store).__name__ == "DirectoryReviewStore" and (tmp_path / "review" / "items").is_dir()


def test_the_directory_store_and_the_settings_never_import_minio(tmp_path: Path) -> None:
    code = f"""
import sys
from pathlib import Path
from api.settings import ApiSettings
from models.store.review_location import open_review_store
from worker.settings import WorkerSettings, open_review_store as open_for_worker
settings = WorkerSettings.from_env({{"PARTSIGHT_REVIEW_STORE": {str(tmp_path / "review")!r}}})
open_for_worker(settings)
open_review_store(Path({str(tmp_path / "other")!r}), max_items=1, max_bytes=1, max_age_s=1)
print(sorted(name for name in sys.modules if name.split(".")[0] == "minio"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
