"""The guards in front of every route: the ``Host`` check (DNS rebinding), the bearer key, the
cross-origin form check, the body-size limit and JSON no route can read, as pure ASGI so a refused
request never reaches a route."""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
import json
import re
from urllib.parse import urlsplit

from lccore.data import MAX_JSON_DEPTH  # a request body nests no deeper than a data file's rows

from .errors import error_bytes

#: Paths answered without the API key: the readiness probe and the static page (it holds no
#: data; the page sends the key the user types with each API call).
OPEN_PATHS = ("/healthz", "/")

#: Host names a server bound to ``--host`` always answers to: the loopback names (and --host).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Bind addresses meaning "every interface": any IP address is then one of the server's own.
ANY_ADDRESS = ("0.0.0.0", "::", "")
#: In an allowed-host list: any IP address (not a name, so no page can rebind it to this machine).
ANY_IP = "<any ip>"


class GuardMiddleware:
    """Pure ASGI, in front of everything: the ``Host`` check (421), the bearer key (401), the
    cross-origin form check (403), the body-size limit (413) and JSON no route can read (422: too
    deep, or a lone surrogate), so that none of those requests reaches a route. A body sent without a content type, or as a form (what
    ``curl -d`` does), is read as JSON when no other site's page sent it."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, allowed_hosts=None):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = None if allowed_hosts is None or "*" in allowed_hosts else [h.lower() for h in allowed_hosts]

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = self.foreign_host(headers.get("host"))
        if refused:
            return await _reply(send, 421, refused)
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                return await _reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'", [(b"www-authenticate", b"Bearer")])
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and content_type in SIMPLE_CONTENT_TYPES and _cross_site(headers):
            # What a page on another site can make a browser send without asking first (no CORS
            # preflight): a form, or text. Without this check any page could drive the server.
            return await _reply(send, 403, f"cross-origin request refused: a page at {headers.get('origin') or 'another site'} may not post "
                                           f"{content_type or 'a body without a content type'} here; send JSON with 'Content-Type: application/json'")
        too_big = f"request body over {self.max_body_bytes} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await _reply(send, 413, too_big)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:  # read it all here, counting, so a chunked body cannot pass the limit either
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _reply(send, 413, too_big)
        problem = json_problem(body)
        if problem:
            return await _reply(send, 422, problem)
        if content_type in ("", "application/x-www-form-urlencoded"):
            # Every endpoint takes JSON: `curl -d '{...}'` sends it labelled as a form; read it as JSON.
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"] + [(b"content-type", b"application/json")]}
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def foreign_host(self, host: str | None) -> str | None:
        """Why a ``Host`` header is refused, or None. A page whose site name has been made to
        resolve to this machine (DNS rebinding) sends its own name here; only the names the
        server was started for are answered."""
        if self.allowed_hosts is None or host is None:  # HTTP/1.0 clients send none; browsers always do
            return None
        name = _host_name(host)
        if name is not None:
            for allowed in self.allowed_hosts:
                if allowed == ANY_IP and _is_ip(name) or fnmatch.fnmatchcase(name, allowed):
                    return None
        shown = ", ".join(h for h in self.allowed_hosts if h != ANY_IP) + (", any IP address" if ANY_IP in self.allowed_hosts else "")
        return (f"Host header {host[:100]!r} is not a name this server answers to ({shown}); "
                f"start lccore serve with --allowed-host NAME to serve under another name")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_problem(body: bytes) -> str | None:
    """Why a JSON body is refused before any route reads it, naming the field, or None: nesting
    deeper than :data:`MAX_JSON_DEPTH`, or a lone surrogate escape (``"\\ud800"``: valid JSON,
    but no character, and every tokenizer and encoder downstream fails on it). Parsed only when
    the bytes could hold either; a body that is not JSON is left to the route's own error."""
    deep = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    if not deep and not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        value = json.loads(body)
    except RecursionError:
        return f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return None
    stack = [(value, "", 0)]
    while stack:  # depth first, without recursion
        item, field, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, field or "body", depth + 1))  # a key is checked as a string of its object
                stack.append((child, f"{field}.{key}" if field else str(key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{field or 'body'}[{index}]", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (f"{field or 'body'}: a lone surrogate (\\u{ord(item[exc.start]):04x}) is not a character; "
                        f"expected valid Unicode text (a pair of surrogate escapes, or the character itself)")
    return None


#: Bodies a browser sends to another site without a CORS preflight (the Fetch standard's
#: "CORS-safelisted" request content types; none: no content type at all).
SIMPLE_CONTENT_TYPES = ("", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def _cross_site(headers: dict) -> bool:
    """Whether a browser sent the request for a page of another origin (an ``Origin`` that is
    not this server's own, or ``Sec-Fetch-Site`` saying so). No ``Origin``: not a browser's
    cross-origin request (curl, programs), which keeps working."""
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return True
    return not parts.netloc or parts.netloc.lower() != headers.get("host", "").lower()


def _host_name(host: str) -> str | None:
    """'Example.org:8000' -> 'example.org', '[::1]:8000' -> '::1'; None when malformed."""
    try:
        parts = urlsplit("//" + host)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts_for(host: str, extra=()) -> list[str]:
    """The ``Host`` names a server bound to ``host`` answers to: the loopback names, ``host``
    itself, ``extra`` (``--allowed-host``; ``*.example.org`` patterns, ``*`` for any: unsafe
    without an API key), and any IP address when bound to every interface (:data:`ANY_IP`): a page
    cannot rebind an address, only a name."""
    names = [*LOCAL_HOSTS, *([] if host in ANY_ADDRESS else [_host_name(f"[{host}]" if ":" in host else host) or host]), *extra]
    if host in ANY_ADDRESS:
        names.append(ANY_IP)
    return list(dict.fromkeys(name.lower() for name in names))


async def _reply(send, status: int, detail: str, headers=()) -> None:
    payload = error_bytes(status, detail)
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})
