"""Request and response bodies: read the few fields the proxy needs, touch nothing else.

A request body is parsed once, to find ``program_id`` (and whether it
streams). It is re-serialised only when it must change: to strip the proxy's
own fields (``program_id``, ``program_release``, ``tool_resources``, ``group_id``), which
vLLM would warn about, and to add ``stream_options.include_usage`` to a
stream, without which a stream carries no token counts. Otherwise the
client's bytes go out as they came.

A response is never parsed whole: ``find_usage`` looks for the last
``"usage": {...}`` object in the last bytes of the body (``Tail``). That is
the final SSE event of a stream, or the end of a JSON completion. Inside a
JSON string every quote is escaped, so an unescaped ``"usage"`` key cannot
come from generated text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from thunder.runtime.state import Usage

PROGRAM_FIELD = "program_id"
RELEASE_FIELD = "program_release"
TOOL_RESOURCES_FIELD = "tool_resources"
GROUP_FIELD = "group_id"
_MAX_TOOL_RESOURCES = 64
TAIL_BYTES = 16 * 1024  # usage plus what vLLM writes after it fits easily

_USAGE_KEY = re.compile(rb'(?<!\\)"usage"\s*:\s*\{')
_DECODER = json.JSONDecoder()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(ValueError):
    """The client's request is malformed: answered with a 4xx JSON error."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    body: bytes  # what goes to the backend
    program_id: str | None
    stream: bool
    release: bool  # release the program once this response is complete
    estimate_tokens: int  # context size guess before any usage is known
    tool_resources: tuple[tuple[str, str], ...] = ()  # (kind, id) the client attaches to its program
    group_id: str | None = None  # rollout group (body ``group_id`` or ``X-Program-Group``)
    max_tokens: int | None = None  # the client's output cap, if it set one


def _program_id(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{where} must be a string, got {type(value).__name__}", param=PROGRAM_FIELD)
    text = str(value).strip()
    if not text or len(text) > 256:
        raise BadRequest(f"{where} must be 1 to 256 characters", param=PROGRAM_FIELD)
    # The id is echoed in the X-Program-Id response header: a CR, LF or other control
    # character there would be a header injection (and aiohttp refuses to send it).
    if _CONTROL.search(text):
        raise BadRequest(f"{where} must not contain control characters", param=PROGRAM_FIELD)
    return text


def _group_id(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{where} must be a string, got {type(value).__name__}", param=GROUP_FIELD)
    text = str(value).strip()
    if not text or len(text) > 256:
        raise BadRequest(f"{where} must be 1 to 256 characters", param=GROUP_FIELD)
    return text


def _max_tokens(payload: dict) -> int | None:
    """The output cap the client set (``max_completion_tokens`` or ``max_tokens``), if a
    positive integer; anything else is left for the backend to judge."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def parse_object(raw: bytes, what: str = "request body") -> dict:
    """``raw`` as a JSON object, or ``BadRequest`` saying what is wrong with it."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # nesting deeper than the parser's stack
        raise BadRequest(f"{what} is nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(payload).__name__}")
    return payload


def prepare(raw: bytes, header_program_id: str | None, header_release: bool = False,
            header_group_id: str | None = None) -> PreparedRequest:
    """Parse a completion request body; raise ``BadRequest`` with a clear reason."""
    payload = parse_object(raw)
    changed = False
    program_id = None
    if header_program_id is not None:
        program_id = _program_id(header_program_id, "X-Program-Id header")
    if PROGRAM_FIELD in payload:
        from_body = _program_id(payload.pop(PROGRAM_FIELD), "program_id")
        changed = True
        if program_id is not None and program_id != from_body:
            raise BadRequest(f"program_id {from_body!r} in the body differs from X-Program-Id {program_id!r}",
                             param=PROGRAM_FIELD)
        program_id = from_body
    release = header_release
    if RELEASE_FIELD in payload:
        flag = payload.pop(RELEASE_FIELD)
        changed = True
        if not isinstance(flag, bool):
            raise BadRequest(f"{RELEASE_FIELD} must be true or false", param=RELEASE_FIELD)
        release = release or flag
    group_id = _group_id(header_group_id, "X-Program-Group header") if header_group_id is not None else None
    if GROUP_FIELD in payload:
        from_body = _group_id(payload.pop(GROUP_FIELD), GROUP_FIELD)
        changed = True
        if group_id is not None and group_id != from_body:
            raise BadRequest(f"group_id {from_body!r} in the body differs from X-Program-Group {group_id!r}",
                             param=GROUP_FIELD)
        group_id = from_body
    tool_resources: tuple[tuple[str, str], ...] = ()
    if TOOL_RESOURCES_FIELD in payload:
        tool_resources = _tool_resources(payload.pop(TOOL_RESOURCES_FIELD))
        changed = True
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"stream must be true or false, got {type(stream).__name__}", param="stream")
    if stream:
        options = payload.get("stream_options")
        if options is None:
            payload["stream_options"] = {"include_usage": True}
            changed = True
        elif not isinstance(options, dict):
            raise BadRequest("stream_options must be an object", param="stream_options")
        elif options.get("include_usage") is not True:
            options["include_usage"] = True
            changed = True
    if release and program_id is None:
        raise BadRequest(f"{RELEASE_FIELD} needs a program_id", param=RELEASE_FIELD)
    if tool_resources and program_id is None:
        raise BadRequest(f"{TOOL_RESOURCES_FIELD} needs a program_id", param=TOOL_RESOURCES_FIELD)
    if group_id is not None and program_id is None:
        raise BadRequest(f"{GROUP_FIELD} needs a program_id", param=GROUP_FIELD)
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() if changed else raw
    return PreparedRequest(body=body, program_id=program_id, stream=stream, release=release,
                           estimate_tokens=estimate_tokens(payload, raw), tool_resources=tool_resources,
                           group_id=group_id, max_tokens=_max_tokens(payload))


def _tool_resources(value: object) -> tuple[tuple[str, str], ...]:
    """``tool_resources``: a list of ids (containers) or ``{"kind", "id"}`` objects."""
    if not isinstance(value, list) or len(value) > _MAX_TOOL_RESOURCES:
        raise BadRequest(f"{TOOL_RESOURCES_FIELD} must be a list of at most {_MAX_TOOL_RESOURCES} entries",
                         param=TOOL_RESOURCES_FIELD)
    found = []
    for entry in value:
        kind, ident = ("container", entry) if isinstance(entry, str) else (
            (entry.get("kind"), entry.get("id")) if isinstance(entry, dict) else (None, None))
        if not (isinstance(kind, str) and isinstance(ident, str) and 0 < len(kind) <= 64 and 0 < len(ident) <= 256):
            raise BadRequest(f"each {TOOL_RESOURCES_FIELD} entry must be an id string or "
                             '{"kind": "...", "id": "..."}', param=TOOL_RESOURCES_FIELD)
        found.append((kind, ident))
    return tuple(found)


def estimate_tokens(payload: dict, raw: bytes) -> int:
    """Context size before any ``usage`` is known: exact for a prompt of token ids,
    else about 4 bytes of JSON per token."""
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return len(prompt)
    return max(1, len(raw) // 4)


class Tail:
    """The last ``TAIL_BYTES`` (at least) of a response body, kept as it streams by."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while len(self._chunks) > 1 and self._size - len(self._chunks[0]) >= TAIL_BYTES:
            self._size -= len(self._chunks.pop(0))

    def data(self) -> bytes:
        return b"".join(self._chunks)


def find_usage(data: bytes) -> Usage | None:
    """The last ``usage`` object in ``data`` (None if absent or not parseable)."""
    match = None
    for match in _USAGE_KEY.finditer(data):
        pass
    if match is None:
        return None
    try:
        usage, _ = _DECODER.raw_decode(data[match.end() - 1:].decode("utf-8", "replace"))
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
