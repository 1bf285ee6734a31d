"""A loopback OpenAI-compatible chat server for tests and benchmarks (127.0.0.1 only, no network).

Reusable by every test that drives the real ``openai`` client: answers come from a handler (a function
of the request) or from scripted rules keyed by content, and any reply can add latency, fail with a
status (429 + Retry-After, 500, 400), hang past the client's timeout, return malformed or schema-breaking
text, or refuse. The server counts requests, requests in flight and the peak in flight.

    with LoopbackOpenAI(handler=my_handler) as server:
        server.script("kidney", Reply.rate_limited(1), Reply.server_error())   # next two "kidney" requests
        client = openai.OpenAI(base_url=server.base_url, api_key="test")

Run standalone (for benchmarks in another process): ``python tests/loopback_openai.py --latency 0.05
--handler module:function``; it prints ``PORT <n>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    """One scripted answer. ``content`` is the assistant text; ``status`` != 200 sends an error body."""

    content: str | None = ""
    status: int = 200
    delay: float = 0.0  # seconds before answering (a value past the client's timeout is a hang)
    headers: dict[str, str] = field(default_factory=dict)
    refusal: str | None = None
    finish_reason: str = "stop"
    body: bytes | None = None  # raw body override, e.g. a broken JSON envelope

    @classmethod
    def text(cls, content: str, delay: float = 0.0) -> Reply:
        return cls(content=content, delay=delay)

    @classmethod
    def json(cls, data: Any, delay: float = 0.0) -> Reply:
        return cls(content=json.dumps(data), delay=delay)

    @classmethod
    def rate_limited(cls, retry_after: float = 1) -> Reply:
        return cls(status=429, headers={"retry-after": f"{retry_after:g}"})

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status)

    @classmethod
    def client_error(cls, status: int = 400) -> Reply:
        return cls(status=status)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Reply:
        return cls(content="{}", delay=seconds)

    @classmethod
    def refuse(cls, message: str = "I can't help with that.") -> Reply:
        return cls(content=None, refusal=message)


@dataclass
class Request:
    index: int  # arrival order, from 0
    body: dict[str, Any]
    text: str  # every text part of every message, joined by newlines
    key: str  # SHA-256 of the canonical messages (identical requests share it)


Handler = Callable[[Request], Reply]


@dataclass
class Rule:
    match: Callable[[Request], bool]
    replies: deque[Reply]


@dataclass
class LogEntry:
    index: int
    key: str
    text: str
    status: int


def request_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if p.get("type") == "text"]
    return "\n".join(parts)


def count_images(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
               for p in m["content"] if p.get("type") == "image_url")


class LoopbackOpenAI:
    def __init__(self, handler: Handler | None = None, latency: float = 0.0):
        self.handler = handler or (lambda request: Reply.text("ok"))
        self.latency = latency  # added to every reply
        self.rules: list[Rule] = []
        self.log: list[LogEntry] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # scripting -----------------------------------------------------------------------------------
    def script(self, match: str | Callable[[Request], bool], *replies: Reply) -> None:
        """The next len(replies) requests whose text contains ``match`` (or satisfy it) get these replies."""
        test = (lambda r, s=match: s in r.text) if isinstance(match, str) else match
        with self._lock:
            self.rules.append(Rule(test, deque(replies)))

    def always(self, match: str | Callable[[Request], bool], reply: Reply, times: int = 10_000) -> None:
        self.script(match, *([reply] * times))

    def _choose(self, request: Request) -> Reply:
        with self._lock:
            for rule in self.rules:
                if rule.replies and rule.match(request):
                    return rule.replies.popleft()
        return self.handler(request)

    # counters ------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.log)

    def keys(self, status: int | None = None) -> set[str]:
        return {e.key for e in self.log if status is None or e.status == status}

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self.rules.clear()
            self.max_in_flight = 0

    # lifecycle -----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self, port: int = 0) -> LoopbackOpenAI:
        server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self), bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 256
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> LoopbackOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # serving -------------------------------------------------------------------------------------
    def _serve(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        messages = json.dumps(body.get("messages", []), sort_keys=True)
        with self._lock:
            index = len(self.log)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            entry = LogEntry(index, hashlib.sha256(messages.encode()).hexdigest(), "", 0)
            self.log.append(entry)
        try:
            request = Request(index, body, request_text(body), entry.key)
            entry.text = request.text
            reply = self._choose(request)
            wait = self.latency + reply.delay
            if wait > 0 and self._stopping.wait(wait):
                return 503, {}, b""
            entry.status = reply.status
            return reply.status, reply.headers, self._body(request, reply)
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _body(request: Request, reply: Reply) -> bytes:
        if reply.body is not None:
            return reply.body
        if reply.status != 200:
            kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(reply.status, "server_error")
            return json.dumps({"error": {"message": f"loopback {reply.status}", "type": kind, "code": kind,
                                         "param": None}}).encode()
        prompt_tokens = len(request.text) // 4 + 85 * count_images(request.body)
        completion_tokens = len(reply.content or reply.refusal or "") // 4 + 1
        return json.dumps({
            "id": f"chatcmpl-loopback-{request.index}", "object": "chat.completion", "created": int(time.time()),
            "model": request.body.get("model", "loopback"), "system_fingerprint": "loopback",
            "choices": [{"index": 0, "logprobs": None, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }).encode()


def _make_handler(owner: LoopbackOpenAI) -> type[BaseHTTPRequestHandler]:
    class ChatHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do

        def setup(self) -> None:
            super().setup()  # headers and body go out in two writes: without NODELAY, Nagle adds ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {}, b'{"error": {"message": "not found", "type": "not_found"}}')
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                return self._send(400, {}, b'{"error": {"message": "bad JSON body", "type": "invalid_request_error"}}')
            self._send(*owner._serve(body))

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                self.close_connection = True

    return ChatHandler


def main() -> None:
    parser = argparse.ArgumentParser(description="serve a loopback OpenAI-compatible chat endpoint")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--handler", help="module:function returning a Reply for a Request")
    args = parser.parse_args()
    handler = None
    if args.handler:
        module, _, name = args.handler.partition(":")
        handler = getattr(importlib.import_module(module), name)
    server = LoopbackOpenAI(handler, latency=args.latency).start(args.port)
    print(f"PORT {server.base_url.split(':')[-1].split('/')[0]}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
