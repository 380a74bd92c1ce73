"""Request bodies of the control API: capped JSON, streamed uploads, and submit validation.

This module owns turning untrusted bytes into values: :func:`read_json` (at most a cap),
:func:`receive_upload` (multipart streamed straight to disk with python-multipart's parser,
stopped at a cap) and :func:`submit_request` (fields -> a validated ``SubmitRequest``, frames
checked with ``parse_frames``). Every mistake is a ``UsageError`` naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from peerfarm.control import SubmitBody, SubmitRequest
from peerfarm.errors import UsageError
from peerfarm.frames import parse_frames
from peerfarm.renderers.options import requirements

#: Largest JSON request body, in bytes.
JSON_LIMIT = 1024 * 1024
#: Default cap on one upload (scene file plus form fields), in bytes.
UPLOAD_LIMIT = 2 * 1024**3
#: Cap on one non-file form field of an upload, in bytes.
FORM_FIELD_LIMIT = 64 * 1024
#: Ranges of the submit fields (what peers accept: ``ledger.codec``), and of a video's rate.
CHUNK_RANGE = (1, 10_000)
RETRIES_RANGE = (0, 100)
PRIORITY_RANGE = (-1_000_000, 1_000_000)
MAX_FPS = 1000.0


class BodyTooLarge(UsageError):
    """A request body over its cap: HTTP 413."""


def text_field(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key!r} must be a string")
    return value


def number(
    fields: Mapping[str, Any],
    key: str,
    kind: type[int] | type[float],
    bounds: tuple[float, float] | None = None,
) -> Any:
    """``fields[key]`` as an int or float (None if absent), within ``bounds`` if given."""
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text) if kind is float or "." in text else int(text)
        except ValueError:
            raise UsageError(f"{key!r} must be a number, not {text[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{key!r} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{key!r} must be a finite number")
    if kind is int and value != int(value):
        raise UsageError(f"{key!r} must be a whole number")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        low, high = (f"{b:,}" if kind is int else f"{b:g}" for b in bounds)
        raise UsageError(f"{key!r} must be from {low} to {high}")
    return kind(value)


def abs_path(fields: Mapping[str, Any], key: str) -> Path | None:
    text = text_field(fields, key)
    if text is None:
        return None
    if "\x00" in text:
        raise UsageError(f"{key!r} must be a path, and paths hold no NUL character")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~user of no such user
        raise UsageError(f"{key!r}: no such user's home in {text[:80]!r}") from None
    if not path.is_absolute():
        raise UsageError(f"{key!r} must be an absolute path on the daemon's machine: {text!r}")
    return path


def flag(fields: Mapping[str, Any], key: str) -> bool:
    value = fields.get(key, False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


#: What a submit may carry: the keys of the contract's ``SubmitBody``.
_SUBMIT_FIELDS = frozenset(SubmitBody.__annotations__)


def submit_request(fields: Mapping[str, Any], *, scene: Path | None = None) -> SubmitRequest:
    """Validate submit fields (JSON, or an upload's form with ``scene`` saved) into a request."""
    unknown = sorted(set(fields) - _SUBMIT_FIELDS)
    if unknown:
        raise UsageError(f"unknown submit field(s): {', '.join(unknown)}")
    scene_path = scene if scene is not None else abs_path(fields, "scene")
    if scene_path is None:
        raise UsageError("'scene' is required")
    frames = text_field(fields, "frames")
    if frames is None:
        raise UsageError("'frames' is required (e.g. 1-240)")
    parse_frames(frames)
    options = fields.get("options", {})
    if not isinstance(options, dict):
        raise UsageError("'options' must be an object of renderer options")
    options = dict(options)
    if flag(fields, "overwrite"):
        options["overwrite"] = True  # deliveries may replace files the job did not write
    chunk = number(fields, "chunk", int, CHUNK_RANGE)
    retries = number(fields, "retries", int, RETRIES_RANGE)
    fps = checked_fps(fields)
    return SubmitRequest(
        scene=scene_path,
        frames=frames,
        renderer=text_field(fields, "renderer") or None,
        chunk=1 if chunk is None else chunk,
        priority=number(fields, "priority", int, PRIORITY_RANGE) or 0,
        name=text_field(fields, "name") or None,
        output=abs_path(fields, "output"),
        cwd=abs_path(fields, "cwd"),
        options=dict(options),
        encode=abs_path(fields, "encode"),
        fps=fps,
        retries=3 if retries is None else retries,
        allow_scripts=flag(fields, "allow_scripts"),
        tiles=number(fields, "tiles", int),
        require=required_tags(fields),
    )


def required_tags(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """``require``: a list of tags, or tags separated by commas (a form's text field)."""
    raw = fields.get("require")
    if raw is None:
        return ()
    if isinstance(raw, list) and all(isinstance(tag, str) for tag in raw):
        raw = ",".join(raw)
    if not isinstance(raw, str):
        raise UsageError("'require' must be a list of tags")
    return tuple(requirements(raw))


def checked_fps(fields: Mapping[str, Any]) -> float | None:
    """A video's frame rate: positive, at most ``MAX_FPS`` (None if absent)."""
    fps = number(fields, "fps", float)
    if fps is not None and not 0 < fps <= MAX_FPS:
        raise UsageError(f"'fps' must be above 0 and at most {MAX_FPS:g}")
    return None if fps is None else float(fps)


async def read_json(request: Request, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``), at most ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
    return parse_json_body(bytes(body))


def parse_json_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (empty: ``{}``); ``UsageError`` for anything else."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise UsageError("the request body is not valid JSON") from None
    except RecursionError:
        raise UsageError("the request body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    return data


@dataclass(slots=True)
class _Part:
    name: str
    filename: str | None
    data: bytearray = field(default_factory=bytearray)


class _UploadParser:
    """python-multipart's streaming parser turned into a queue of (kind, value) events."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, Any]] = []
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition"))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self.events.append(
            ("part", (name, None if filename is None else filename.decode("utf-8", "replace")))
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", bytes(data[start:end])))

    def _end(self) -> None:
        self.events.append(("end", None))


def _safe_upload_name(filename: str) -> str:
    name = Path(filename.replace("\\", "/")).name.strip()
    if name in ("", ".", "..") or name.startswith("."):
        raise UsageError(f"unusable scene file name {filename!r}")
    return name


async def receive_upload(request: Request, folder: Path, limit: int) -> tuple[Path, dict[str, Any]]:
    """Stream a multipart upload into ``folder``: (the saved scene, the form's other fields).

    Repeated ``option`` fields ``KEY=VALUE`` and an ``options`` JSON object become ``options``.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UsageError("an upload must be multipart/form-data")
    parser = _UploadParser(params[b"boundary"])
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    scene: Path | None = None
    sink: Any = None  # trio's async file wrapper around the scene being written
    part: _Part | None = None
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"upload over the limit of {limit} bytes")
            try:
                parser.parser.write(chunk)
            except MultipartParseError as exc:
                raise UsageError(f"malformed upload: {exc}") from None
            events, parser.events = parser.events, []
            for kind, value in events:
                if kind == "part":
                    part = _Part(name=value[0], filename=value[1])
                    if part.filename is not None:
                        if part.name != "scene" or scene is not None:
                            raise UsageError("an upload carries exactly one file, named 'scene'")
                        scene = folder / _safe_upload_name(part.filename)
                        sink = await trio.open_file(scene, "wb")
                elif kind == "data" and part is not None:
                    if sink is not None and part.filename is not None:
                        await sink.write(value)
                    else:
                        part.data += value
                        if len(part.data) > FORM_FIELD_LIMIT:
                            raise BodyTooLarge(f"form field {part.name!r} is too large")
                elif kind == "end" and part is not None:
                    if part.filename is not None and sink is not None:
                        await sink.aclose()
                        sink = None
                    else:
                        _add_form_field(fields, options, part.name, _text(part))
                    part = None
        parser.parser.finalize()
    finally:
        if sink is not None:
            await sink.aclose()
    if scene is None:
        raise UsageError("the upload has no scene file (a file field named 'scene')")
    if options:
        fields["options"] = {**fields.get("options", {}), **options}
    return scene, fields


def _text(part: _Part) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"form field {part.name[:40]!r} is not UTF-8 text") from None


def _add_form_field(fields: dict[str, Any], options: dict[str, Any], name: str, value: str) -> None:
    if name == "option":
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad option {value!r}: write KEY=VALUE")
        options[key.strip()] = parse_option_value(text)
    elif name == "options":
        if value.strip():
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):
                raise UsageError("'options' must be a JSON object") from None
            if not isinstance(parsed, dict):
                raise UsageError("'options' must be a JSON object")
            fields["options"] = parsed
    elif name == "require":  # repeated, or one field of tags separated by commas
        if value.strip():
            fields.setdefault("require", []).append(value)
    elif value != "":
        fields[name] = value


def parse_option_value(text: str) -> Any:
    """A renderer option's value: JSON when it parses (numbers, true, null), else the text."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # NaN, Infinity: stay text
