"""A small Hugging Face Hub for the tests, over real HTTP on a loopback port.

It answers the part of the Hub's API that ``huggingface_hub`` calls for llamahost: model
search (``/api/models``), model info with file metadata (``/api/models/{repo}`` and
``.../revision/{rev}``), and file downloads (``/{repo}/resolve/{rev}/{file}``: HEAD with the
commit and LFS headers, GET with ranges). Files are real files on disk. Switches make it
drop a download midway once, stall one until released, serve corrupted bytes, and refuse
a gated repository to a request without the token.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "hf_llamahost_test_token"
DATE = "2026-10-01T00:00:00.000Z"


@dataclass
class HubFile:
    name: str
    size: int
    sha256: str
    path: Path | None  # None: only listed (a file larger than this machine could hold); never served

    @property
    def pointer(self) -> bytes:
        """The git LFS pointer committed in its place: its git blob id is the file's blobId."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    def sibling(self, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": self.name}
        blob_id = hashlib.sha1(b"blob %d\0" % len(self.pointer) + self.pointer).hexdigest()
        return {"rfilename": self.name, "size": self.size, "blobId": blob_id,
                "lfs": {"size": self.size, "sha256": self.sha256, "pointerSize": len(self.pointer)}}


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    gated: bool = False
    downloads: int = 0

    @property
    def commit(self) -> str:
        return hashlib.sha1(json.dumps([self.repo_id, sorted((f.name, f.sha256) for f in self.files.values())])
                            .encode()).hexdigest()

    def info(self, blobs: bool) -> dict:
        return {"_id": self.commit[:24], "id": self.repo_id, "modelId": self.repo_id,
                "author": self.repo_id.split("/")[0], "sha": self.commit, "private": False,
                "gated": "manual" if self.gated else False, "disabled": False, "downloads": self.downloads,
                "likes": 0, "tags": ["gguf"], "library_name": "gguf", "lastModified": DATE, "createdAt": DATE,
                "siblings": [f.sibling(blobs) for f in self.files.values()]}


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    drop_once_after: int | None = None  # the next full download sends this many bytes, then the connection drops
    stall_after: int | None = None  # downloads send this many bytes, then wait for `release`
    release: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)  # set once a download waits for `release`
    corrupt: set[str] = field(default_factory=set)  # file names served with one byte changed

    def add_repo(self, repo_id: str, files: dict[str, Path | int], *, gated: bool = False,
                 downloads: int = 0) -> HubRepo:
        """``files``: name -> a file to serve, or a size for a file that is only listed."""
        entries = {}
        for name, source in files.items():
            if isinstance(source, int):
                entries[name] = HubFile(name, source, hashlib.sha256(name.encode()).hexdigest(), None)
            else:
                entries[name] = HubFile(name, source.stat().st_size, hashlib.sha256(source.read_bytes()).hexdigest(),
                                        source)
        self.repos[repo_id] = HubRepo(repo_id, entries, gated, downloads)
        return self.repos[repo_id]

    def start(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def downloads_of(self, name: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith("/" + name)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool, length: int | None = None) -> None:
        """The status, the headers and (unless head) the body; ``length`` announces another length."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data: object, head: bool) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, head)

    def _error(self, status: int, code: str | None, message: str, head: bool, **headers: str) -> None:
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(),
                   dict(headers, **{"Content-Type": "application/json"}), head)

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.hub.requests.append((self.command, url.path, self.headers.get("Range")))
        parts = unquote(url.path).strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            if len(parts) == 2:
                return self._json(self._search(query), head)
            repo = self.hub.repos.get("/".join(parts[2:4]))
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found", head)
            rest = parts[4:]
            if rest and not (len(rest) == 2 and rest[0] == "revision" and rest[1] in ("main", repo.commit)):
                return self._error(404, "RevisionNotFound", "Invalid rev id", head)
            return self._json(repo.info(blobs=query.get("blobs") == ["true"]), head)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._file("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._error(404, None, "Not found", head)

    def _search(self, query: dict[str, list[str]]) -> list[dict]:
        text = query.get("search", [""])[0].lower()
        tags = set(query.get("filter", []))
        found = [r for r in self.hub.repos.values() if text in r.repo_id.lower() and tags <= {"gguf"}]
        found.sort(key=lambda r: r.downloads, reverse=True)
        limit = int(query.get("limit", [len(found)])[0])
        return [r.info(blobs=False) for r in found[:limit]]

    def _file(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", "Invalid rev id", head)
        if repo.gated and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to "
                               "it and be authenticated to access it. Please log in.", head)
        hub_file = repo.files.get(name)
        if hub_file is None or hub_file.path is None:
            return self._error(404, "EntryNotFound", "Entry not found", head, **{"X-Repo-Commit": repo.commit})
        data = hub_file.path.read_bytes()
        if name in self.hub.corrupt:
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{hub_file.sha256}"', "X-Linked-Etag": f'"{hub_file.sha256}"',
                   "X-Linked-Size": str(hub_file.size), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start = 0
        status = 200
        requested = self.headers.get("Range")
        if requested:
            first, _, last = requested.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        if head:
            return self._send(status, data, headers, head=True)
        cut = self.hub.drop_once_after if start == 0 else None
        stall = self.hub.stall_after
        if cut is None and stall is None:
            return self._send(status, data, headers, head=False)
        self.hub.drop_once_after = None
        self._send(status, b"", headers, head=True, length=len(data))
        self.close_connection = True
        try:
            self.wfile.write(data[:cut if cut is not None else stall])
            self.wfile.flush()
            if cut is None:
                self.hub.stalled.set()
                self.hub.release.wait()
                self.wfile.write(data[stall:])
        except (BrokenPipeError, ConnectionResetError):  # the client went away (it was interrupted)
            pass
