"""A property-based HTTP fuzzer against the proxy's documented API.

One proxy (policy thunder) and one stand-in backend run in a background thread for
the module; hypothesis sends raw HTTP: bodies that are not JSON, JSON of every
shape with the proxy's own fields set to wrong types, unknown fields, odd program
ids in bodies, headers and paths, header injection attempts, huge bodies. The
properties: no answer is a 5xx, every error the proxy itself writes is its JSON
error shape, and aiohttp never logs an unhandled exception. A hostile client
creating thousands of programs meets the program cap: 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp.http_exceptions import BadHttpMessage
from fake_backend import FakeBackend, proxy_url, running_proxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_BODY = 64 * 1024
PROXY_ERROR_TYPES = {"invalid_request_error", "not_found", "too_many_programs", "program_released"}


class Errors(logging.Handler):
    """Collects what aiohttp logs at ERROR (an unhandled exception in a handler)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], BadHttpMessage):
            return  # aiohttp's parser refused the request line or a header: it answered 400 itself
        self.records.append(record)


class Rig:
    """Stand-in backend + proxy on their own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop = None
        self.port = 0
        self.server = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _main(self) -> None:
        fake = FakeBackend()
        await fake.start()
        self.stop = asyncio.Event()
        async with running_proxy([fake.url], policy="thunder", max_body_bytes=MAX_BODY,
                                 max_programs=100_000, max_hold_s=5.0) as server:
            self.server, self.port = server, server.port
            self.ready.set()
            await self.stop.wait()
        await fake.stop()

    def start(self) -> None:
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(self._main(), self.loop)
        assert self.ready.wait(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.future.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    errors = Errors()
    loggers = [logging.getLogger(name) for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access")]
    for logger in loggers:
        logger.addHandler(errors)
    rig = Rig()
    rig.start()
    try:
        yield rig
    finally:
        status, _, _ = rig.request("GET", "/health")
        rig.close()
        for logger in loggers:
            logger.removeHandler(errors)
    assert status == 200
    assert not errors.records, [(r.getMessage(), repr(r.exc_info[1]) if r.exc_info else "") for r in errors.records][:5]


def check(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:300])
    if status >= 400 and headers.get("Content-Type", "").startswith("application/json"):
        error = json.loads(body)["error"]
        assert isinstance(error["message"], str) and error["message"]
        if error.get("type") != "BadRequestError":  # the stand-in backend's own 400s pass through
            assert error["type"] in PROXY_ERROR_TYPES, error


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
FIELDS = ["program_id", "program_release", "tool_resources", "stream", "stream_options", "messages", "prompt",
          "max_tokens", "model", "n", "unknown_field"]
program_ids = st.one_of(st.text(min_size=0, max_size=300), st.integers(-2**80, 2**80),
                        st.sampled_from(["a\r\nX-Evil: 1", "\x00", " ", "é☃", "a" * 257, "../../etc"]))


@FUZZ
@given(raw=st.binary(max_size=2000))
def test_any_bytes_as_a_body(rig, raw):
    check(*rig.request("POST", "/v1/chat/completions", raw, {"Content-Type": "application/json"}))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(FIELDS), json_values | program_ids, max_size=6),
       path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_json_of_every_shape_with_the_proxys_fields_wrong(rig, fields, path):
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}
    check(*rig.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"}))


@FUZZ
@given(program_id=program_ids, release=st.sampled_from(["", "1", "true", "no", "\t1"]))
def test_program_ids_in_bodies_and_headers(rig, program_id, release):
    body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                       "program_id": program_id}).encode()
    check(*rig.request("POST", "/v1/chat/completions", body))
    header = str(program_id)
    try:
        header.encode("latin-1")
        answer = rig.request("POST", "/v1/chat/completions", body[:0] + b'{"model": "fake", "max_tokens": 2}',
                             {"X-Program-Id": header, "X-Program-Release": release})
    except (ValueError, UnicodeError, http.client.HTTPException):
        return  # not a header a client library sends; the parser's own refusal is aiohttp's business
    check(*answer)


@FUZZ
@given(program_id=st.text(max_size=300), table=st.text(max_size=20),
       admin_body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_operator_endpoints(rig, program_id, table, admin_body):
    quoted = urllib.parse.quote(program_id, safe="")
    check(*rig.request("POST", f"/programs/{quoted}/release"))
    check(*rig.request("GET", f"/programs/{quoted}"))
    check(*rig.request("POST", "/programs/release", json.dumps({"program_id": program_id}).encode()))
    check(*rig.request("POST", "/programs/release", admin_body))
    check(*rig.request("GET", f"/programs/export.csv?table={urllib.parse.quote(table)}"))
    status, headers, body = rig.request("POST", "/admin/pause", admin_body)
    check(status, headers, body)
    check(*rig.request("POST", "/admin/resume"))
    assert rig.server.cluster.dispatch_hold is None


def test_huge_bodies_get_413_with_or_without_a_length(rig):
    big = b'{"model": "fake", "messages": [{"role": "user", "content": "' + b"x" * (2 * MAX_BODY) + b'"}]}'
    status, _, body = rig.request("POST", "/v1/chat/completions", big)
    assert status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error"

    def chunks():
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]
    connection = http.client.HTTPConnection("127.0.0.1", rig.port, timeout=30)
    try:
        connection.request("POST", "/v1/chat/completions", body=chunks(), encode_chunked=True,
                           headers={"Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        assert response.status == 413, response.read()[:200]
    finally:
        connection.close()


def test_a_deeply_nested_body_is_a_400_not_a_crash(rig):
    status, _, body = rig.request("POST", "/v1/chat/completions", b'{"a":' * 12_000)
    assert status == 400 and "nested too deeply" in json.loads(body)["error"]["message"]


def test_a_program_id_with_a_newline_cannot_inject_a_header(rig):
    body = json.dumps({"model": "fake", "messages": [], "program_id": "a\r\nSet-Cookie: x=1"}).encode()
    status, headers, answer = rig.request("POST", "/v1/chat/completions", body)
    assert status == 400 and "Set-Cookie" not in headers
    assert "control characters" in json.loads(answer)["error"]["message"]


# -- a hostile client and the program cap -----------------------------------------------------

def test_thousands_of_programs_from_one_client_meet_the_cap():
    async def scenario():
        fake = FakeBackend()
        await fake.start()
        try:
            async with running_proxy([fake.url], policy="thunder", max_programs=300, retry_after_s=7) as server:
                connector = aiohttp.TCPConnector(limit=64)
                async with aiohttp.ClientSession(proxy_url(server), connector=connector) as client:
                    async def new_program(i):
                        body = {"model": "fake", "messages": [{"role": "user", "content": "x"}],
                                "max_tokens": 1, "program_id": f"hostile-{i}"}
                        async with client.post("/v1/chat/completions", json=body) as response:
                            return response.status, response.headers.get("Retry-After"), await response.json()
                    answers = await asyncio.gather(*(new_program(i) for i in range(3000)))
                    statuses = [status for status, _, _ in answers]
                    assert statuses.count(200) == 300 and statuses.count(429) == 2700
                    refused = next(a for a in answers if a[0] == 429)
                    assert refused[1] == "7" and refused[2]["error"]["type"] == "too_many_programs"
                    assert len(server.cluster.programs) == 300
                    assert (await new_program(0))[0] == 200  # a known program is still served
                    async with client.post("/programs/hostile-0/release") as response:
                        assert response.status == 200
                    assert (await new_program(5000))[0] == 200  # room again after a release
                    async with client.get("/metrics") as response:
                        text = await response.text()
                    assert re.search(r'thunder[_:]requests_total\{outcome="too_many_programs"\} 2700(\.0)?$', text,
                                     re.MULTILINE), text
        finally:
            await fake.stop()
    asyncio.run(scenario())
