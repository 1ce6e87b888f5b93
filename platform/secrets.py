"""Keep credentials out of log lines, error messages, MLflow params/tags, reports and Tune state.

Credentials come only from the standard chains (AWS: environment, shared files, instance
roles; MLflow: ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` or ``user:password@`` in
the tracking URI); the platform never asks for them and never stores them. They can still
leak by accident: botocore's DEBUG log prints the ``Authorization`` header (which contains the
access key id), presigned URLs carry ``X-Amz-Credential``/``X-Amz-Signature``, and a
MinIO endpoint written as ``http://user:password@host:9000`` puts the secret in every
message that names the endpoint.

:func:`scrub` removes all three kinds. :func:`install_log_scrubber` wraps the process-wide
log record factory so that *every* record (ours, botocore's, s3transfer's, urllib3's and
those of loggers created later) is scrubbed when it is created, before any handler,
file or MLflow sink sees it. A per-logger ``logging.Filter`` would not do: filters only
run for records created on the logger they are attached to, not on its children.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable

REDACTED = "***"
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words everywhere

_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False

# scheme://user:password@host -> scheme://***@host. "/" is allowed before the "@" because AWS
# secrets contain it and people paste them unencoded (over-redacting a path with "@" is harmless).
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s@'\"<>]+@")
# SigV4 "Credential=AKIA.../date/region/s3/aws4_request", query-string variants and signatures
_SIGV4 = re.compile(
    r"(?P<name>X-Amz-Credential|Credential|X-Amz-Signature|Signature|X-Amz-Security-Token"
    r"|AWSAccessKeyId|aws_access_key_id|aws_secret_access_key|aws_session_token)"
    r"(?P<sep>\s*[=:]\s*['\"]?)(?P<value>[^\s,&'\"<>]+)",
    re.IGNORECASE,
)

_ENV_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RAY_AUTH_TOKEN")
# Any other variable whose name says it holds a secret (GITHUB_TOKEN, DB_PASSWORD, ...).
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)
# Values under a secret-looking name that are settings, not secrets (e.g. AWS_SECRET_ACCESS_KEY_FILE paths).
_NOT_SECRET_VALUES = {"true", "false", "none", "null", "0", "1", "yes", "no"}
# AWS access key ids are recognisable by their shape even when not registered.
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{16}\b")


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values (access key id, secret key, session token) to redact."""
    with _lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET_LEN:
                _secrets.add(value)


def register_env_secrets() -> None:
    """Register the credential values present in the environment, and the password of
    ``user:password@`` in ``$MLFLOW_TRACKING_URI``/``$MLFLOW_REGISTRY_URI``, if any."""
    register_secrets(os.environ.get(name) for name in _ENV_SECRETS)
    register_secrets(v for k, v in os.environ.items() if _SECRET_NAME.search(k) and _looks_secret(v))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        register_url_secrets(os.environ.get(name))


def _looks_secret(value: str) -> bool:
    """A value of a secret-sounding variable worth redacting: not a flag, a number or a path."""
    return (len(value) >= 8 and value.lower() not in _NOT_SECRET_VALUES and not value.isdigit()
            and not value.startswith(("/", "~", ".")) and " " not in value)


def register_url_secrets(url: str | None) -> None:
    """Register the user name and password of a URL's ``user:password@`` part (URL-decoded too)."""
    from urllib.parse import unquote, urlsplit

    if not url or "@" not in url:
        return
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return
    register_secrets([password, unquote(password or "") or None])
    if password:  # a user name alone is no secret; with a password it identifies the account
        register_secrets([user, unquote(user or "") or None])


def scrub(text: object) -> str:
    """``text`` as a string with every known secret, URL password and signature redacted."""
    out = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, REDACTED)
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", out)
    out = _AWS_KEY_ID.sub(REDACTED, out)
    out = _SIGV4.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", out)
    return out


def scrub_url(url: str | None) -> str | None:
    """An endpoint URL without its ``user:password@`` part."""
    return None if url is None else _URL_USERINFO.sub(lambda m: m.group("scheme"), url)


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: let logging report it as usual
        return
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        # Format the traceback now, scrubbed; Formatter.format reuses exc_text.
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)


def install_log_scrubber() -> None:
    """Scrub every log record created in this process from now on, and the tracebacks of
    uncaught exceptions (idempotent; the secrets of the environment are registered again)."""
    global _installed
    with _lock:
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args, **kwargs):
                record = previous(*args, **kwargs)
                _scrub_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _install_excepthook()
            _installed = True
    register_env_secrets()


def _install_excepthook() -> None:
    import sys
    import traceback

    def hook(kind, value, tb):
        sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = hook
