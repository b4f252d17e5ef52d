"""Every error the server sends: one body, readable both by lccore's clients (``detail``, ``field``)
and by OpenAI's (``error``: message, type, param, code), so the official ``openai`` client raises
its usual exceptions with lccore's one-line message."""

from __future__ import annotations

import json
import re

#: OpenAI's error types by HTTP status (what its clients switch on).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               409: "invalid_request_error", 413: "invalid_request_error", 421: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error", 504: "timeout_error"}
CODES = {401: "invalid_api_key", 403: "refused", 404: "not_found", 413: "too_large", 421: "misdirected_request", 503: "busy", 504: "timeout"}

#: "inputs[3]: ..." or "options.max_new_tokens: ...": the field an error message starts with.
_FIELD = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\]|\.[A-Za-z_]\w*)*): ")


class RequestError(Exception):
    """An error for the client: ``status``, a one-line ``detail`` and, where known, the request
    ``field`` it is about (else the one ``detail`` starts with)."""

    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers


def field_of(detail: str) -> str | None:
    match = _FIELD.match(detail)
    return match.group(1) if match else None


def error_body(status: int, detail: str, field: str | None = None, code: str | None = None, **extra) -> dict:
    field = field or field_of(detail)
    body = {"detail": detail, **({"field": field} if field else {}), **extra}
    body["error"] = {"message": detail, "type": ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
                     "param": field, "code": code or CODES.get(status)}
    return body


def error_bytes(status: int, detail: str) -> bytes:
    return json.dumps(error_body(status, detail)).encode()
