"""A loopback Hugging Face Hub: enough of the Hub's HTTP API for the real ``huggingface_hub`` and
``datasets`` clients to create a dataset repo, pre-upload LFS blobs, commit, list, resolve and stream.

Runs in a thread on 127.0.0.1 (port 0), keeps every repo in memory (commits with their file maps, LFS
blobs by sha256) and counts what it received. Faults can be scripted: answer a status (429 with
Retry-After, 503, ...) to the next N requests matching a pattern, and, once N LFS uploads have landed,
hang, drop the connection or answer 503 on every further upload. Tokens outside ``valid_tokens`` get the
Hub's 401 ("Invalid credentials in Authorization header").

Only the standard library is used, so the test process can run it without importing the clients
(``HF_ENDPOINT`` is read when they are imported).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

DEFAULT_TOKEN = "hf_loopbackTESTtoken0123456789abcdef"
USER = "medground"
LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".bin", ".safetensors", ".npy", ".npz", ".gz",
                ".zip", ".tar", ".nii", ".h5")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class FileEntry:
    size: int
    oid: str                      # git blob oid (of the pointer file for LFS files)
    sha256: str | None = None     # set for LFS files
    data: bytes | None = None     # content of regular files
    last_commit: str = ""


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)        # "main" / "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)         # sha256 -> content
    prs: int = 0
    created_at: str = field(default_factory=_now)


@dataclass
class ScriptedFault:
    pattern: re.Pattern
    method: str | None
    status: int
    remaining: int
    headers: dict[str, str]


class HubState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.valid_tokens = {DEFAULT_TOKEN}
        self.tree_page_size = 1000
        # counters
        self.uploads = 0                  # LFS PUTs whose content was stored
        self.upload_requests = 0          # every LFS PUT received
        self.uploaded_oids: list[str] = []
        self.commits = 0                  # commits created through the commit endpoint
        self.commit_requests = 0
        self.events: list[tuple[float, str, str, int]] = []   # (time, method, path, status)
        self.auth_headers_seen: set[str] = set()
        # faults
        self.scripted: list[ScriptedFault] = []
        self.upload_fault_after: int | None = None
        self.upload_fault_mode = "503"    # "503" | "drop" | "hang"
        self.upload_fault_count: int | None = None   # None = every further upload
        self.hang_release = threading.Event()
        self.hanging = 0
        self.serve_instead: dict[str, str] = {}   # resolve path -> path whose bytes are served (corruption)

    # ---- scripting -------------------------------------------------------------------------------
    def fail_next(self, pattern: str, status: int, count: int = 1, method: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.scripted.append(ScriptedFault(re.compile(pattern), method, status, count, headers or {}))

    def fail_uploads_after(self, n: int, mode: str = "503", count: int | None = None) -> None:
        with self.lock:
            self.upload_fault_after, self.upload_fault_mode, self.upload_fault_count = n, mode, count
            self.hang_release.clear()

    def clear_faults(self) -> None:
        with self.lock:
            self.scripted.clear()
            self.upload_fault_after = None
            self.serve_instead.clear()
            self.hang_release.set()

    def reset_counters(self) -> None:
        with self.lock:
            self.uploads = self.upload_requests = self.commits = self.commit_requests = 0
            self.uploaded_oids.clear()
            self.events.clear()

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def head_files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, FileEntry]:
        repo = self.repo(repo_id, repo_type)
        return repo.commits[repo.refs[revision]].files

    def file_bytes(self, repo: Repo, entry: FileEntry) -> bytes:
        return repo.lfs[entry.sha256] if entry.sha256 else (entry.data or b"")

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        entry = FileEntry(len(GITATTRIBUTES), git_blob_oid(GITATTRIBUTES), data=GITATTRIBUTES)
        oid = hashlib.sha1(f"init {repo_type} {repo_id} {time.time()}".encode()).hexdigest()
        entry.last_commit = oid
        repo.commits[oid] = Commit(oid, None, "initial commit", _now(), {".gitattributes": entry})
        repo.refs["main"] = oid
        self.repos[(repo_type, repo_id)] = repo
        return repo


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _DropConnection(Exception):
    pass


REPO_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
LFS_PUT = re.compile(r"^/__lfs/(\w+)/([^/]+/[^/]+)/([0-9a-f]{64})$")
LFS_VERIFY = re.compile(r"^/__lfs-verify/(\w+)/([^/]+/[^/]+)$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1                    # headers and body leave in one write (no Nagle/delayed-ACK stalls)
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format, *args):  # silence the default stderr logging
        pass

    # ---- plumbing --------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": content_type, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and self.command != "HEAD" and body:
            self.wfile.write(body)
        with self.state.lock:
            self.state.events.append((time.monotonic(), self.command, self.path, status))

    def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or self.headers.get("authorization")
        if auth:
            self.state.auth_headers_seen.add(auth)
            if auth.lower().startswith("bearer "):
                return auth[7:].strip()
            return ""
        return None

    def _check_auth(self, write: bool, repo: Repo | None = None) -> None:
        token = self._token()
        if token is not None and token not in self.state.valid_tokens:
            raise HubError(401, "Invalid credentials in Authorization header",
                           headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        if token is None and (write or (repo is not None and repo.private)):
            if write:
                raise HubError(401, "You must be authenticated to access this resource.")
            raise HubError(401, "Repository not found", code="RepoNotFound")

    def _dispatch(self) -> None:
        body = self._read_body() if self.command in ("POST", "PUT") else b""
        path = urlsplit(self.path).path
        with self.state.lock:
            for fault in self.state.scripted:
                if fault.remaining > 0 and fault.pattern.search(path) and fault.method in (None, self.command):
                    fault.remaining -= 1
                    self._json(fault.status, {"error": f"scripted {fault.status}"}, fault.headers)
                    return
        try:
            self._route(path, body)
        except _DropConnection:
            self.close_connection = True
            with self.state.lock:
                self.state.events.append((time.monotonic(), self.command, self.path, 0))
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json(e.status, {"error": e.message}, headers)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = lambda self: self._dispatch()

    # ---- routing ---------------------------------------------------------------------------------
    def _route(self, path: str, body: bytes) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if path == "/api/whoami-v2" and self.command == "GET":
            return self._whoami()
        if path == "/api/repos/create" and self.command == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if m := LFS_BATCH.match(path):
            return self._lfs_batch((m.group(1) or "models")[:-1], m.group(2), json.loads(body or b"{}"))
        if m := LFS_PUT.match(path):
            return self._lfs_put(m.group(1), m.group(2), m.group(3), body)
        if m := LFS_VERIFY.match(path):
            return self._lfs_verify(m.group(1), m.group(2), json.loads(body or b"{}"))
        if m := RESOLVE.match(path):
            repo_type = (m.group(1) or "models")[:-1]
            return self._resolve(repo_type, m.group(2), unquote(m.group(3)), unquote(m.group(4)))
        if m := REPO_API.match(path):
            repo_type, repo_id, rest = m.group(1)[:-1], m.group(2), m.group(3) or ""
            return self._repo_api(repo_type, repo_id, rest, query, body)
        raise HubError(404, f"loopback hub: no route for {self.command} {path}")

    def _get_repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.state.repos.get((repo_type, repo_id))
        self._check_auth(write, repo)
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        oid = repo.refs.get(revision)
        if oid is None and revision in repo.commits:
            oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return repo.commits[oid]

    def _repo_api(self, repo_type: str, repo_id: str, rest: str, query: dict, body: bytes) -> None:
        parts = rest.split("/") if rest else []
        if not parts and self.command == "GET":
            return self._info(repo_type, repo_id, "main", query)
        head, args = parts[0], parts[1:]
        if head == "revision" and self.command == "GET":
            return self._info(repo_type, repo_id, unquote("/".join(args)), query)
        if head == "refs" and self.command == "GET":
            return self._refs(repo_type, repo_id, query)
        if head == "tree" and self.command == "GET":
            return self._tree(repo_type, repo_id, unquote(args[0]), unquote("/".join(args[1:])), query)
        if head == "paths-info" and self.command == "POST":
            return self._paths_info(repo_type, repo_id, unquote("/".join(args)), parse_qs(body.decode()))
        if head == "preupload" and self.command == "POST":
            return self._preupload(repo_type, repo_id, unquote("/".join(args)), json.loads(body or b"{}"))
        if head == "commit" and self.command == "POST":
            return self._commit(repo_type, repo_id, unquote("/".join(args)), query, body)
        if head == "branch" and self.command == "POST":
            return self._create_branch(repo_type, repo_id, unquote("/".join(args)), json.loads(body or b"{}"))
        raise HubError(404, f"loopback hub: no route for {self.command} /api/{repo_type}s/{repo_id}/{rest}")

    # ---- account & repos -------------------------------------------------------------------------
    def _whoami(self) -> None:
        token = self._token()
        if token is None or token not in self.state.valid_tokens:
            raise HubError(401, "Invalid credentials in Authorization header",
                           headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        self._json(200, {"type": "user", "name": USER, "fullname": "MedGround test user",
                         "orgs": [{"type": "org", "name": "medground"}],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _create_repo(self, payload: dict) -> None:
        self._check_auth(write=True)
        repo_type = payload.get("type") or "model"
        name, org = payload.get("name"), payload.get("organization") or USER
        if not name:
            raise HubError(400, "name is required")
        repo_id = f"{org}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.base}/{prefix}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                self._json(409, {"error": f"You already created this {repo_type} repo", "url": url})
                return
            self.state.create_repo(repo_type, repo_id, payload.get("visibility") == "private")
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        self._check_auth(write=False)
        content = payload.get("content", "")
        errors = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            try:
                meta = yaml.safe_load(content[3:end] if end > 0 else content[3:])
                if meta is not None and not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a mapping"})
                for cfg in (meta or {}).get("configs", []) or []:
                    if not isinstance(cfg, dict) or "config_name" not in cfg:
                        errors.append({"message": f"configs entry without config_name: {cfg!r}"})
            except yaml.YAMLError as e:
                errors.append({"message": f"invalid YAML: {e}"})
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _card_data(self, repo: Repo, commit: Commit) -> dict | None:
        entry = commit.files.get("README.md")
        if entry is None:
            return None
        text = self.state.file_bytes(repo, entry).decode("utf-8", "replace")
        if not text.startswith("---"):
            return None
        end = text.find("\n---", 3)
        try:
            meta = yaml.safe_load(text[3:end])
        except yaml.YAMLError:
            return None
        return meta if isinstance(meta, dict) else None

    def _info(self, repo_type: str, repo_id: str, revision: str, query: dict) -> None:
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_at(repo, revision)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, e in sorted(commit.files.items()):
            sib: dict = {"rfilename": path}
            if blobs:
                sib.update(size=e.size, blobId=e.oid)
                if e.sha256:
                    sib["lfs"] = {"size": e.size, "sha256": e.sha256, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
            siblings.append(sib)
        self._json(200, {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
            "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created_at,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "cardData": self._card_data(repo, commit), "siblings": siblings,
        })

    def _refs(self, repo_type: str, repo_id: str, query: dict) -> None:
        repo = self._get_repo(repo_type, repo_id)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                    for n, c in repo.refs.items() if not n.startswith("refs/")]
        out = {"branches": branches, "converts": [], "tags": []}
        if query.get("include_prs"):
            out["pullRequests"] = [{"name": n, "ref": n, "targetCommit": c}
                                   for n, c in repo.refs.items() if n.startswith("refs/pr/")]
        self._json(200, out)

    # ---- tree & paths-info -----------------------------------------------------------------------
    def _entry_json(self, repo: Repo, path: str, e: FileEntry, expand: bool) -> dict:
        out: dict = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
        if e.sha256:
            out["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        if expand:
            c = repo.commits.get(e.last_commit)
            if c:
                out["lastCommit"] = {"id": c.oid, "title": c.title, "date": c.date}
        return out

    def _dir_json(self, commit: Commit, path: str) -> dict:
        oid = hashlib.sha1((commit.oid + path).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, query: dict) -> None:
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_at(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{path} does not exist on {revision}", code="EntryNotFound")
        entries: dict[str, dict] = {}
        for p, e in sorted(commit.files.items()):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            if recursive:
                for i in range(1, len(rel)):
                    d = prefix + "/".join(rel[:i])
                    entries.setdefault(d, self._dir_json(commit, d))
                entries[p] = self._entry_json(repo, p, e, expand)
            elif len(rel) == 1:
                entries[p] = self._entry_json(repo, p, e, expand)
            else:
                d = prefix + rel[0]
                entries.setdefault(d, self._dir_json(commit, d))
        items = [entries[k] for k in sorted(entries)]
        start = int(query.get("cursor", ["0"])[0])
        size = self.state.tree_page_size
        page = items[start:start + size]
        headers = {}
        if start + size < len(items):
            q = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}&cursor={start + size}"
            url = f"{self.base}/api/{repo_type}s/{repo_id}/tree/{quote(revision, safe='')}"
            if prefix:
                url += "/" + quote(path.strip("/"), safe="")
            headers["Link"] = f'<{url}?{q}>; rel="next"'
        self._json(200, page, headers)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, form: dict) -> None:
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_at(repo, revision)
        expand = form.get("expand", ["False"])[0].lower() in ("1", "true")
        out = []
        for p in form.get("paths", []):
            p = p.strip("/")
            if p in commit.files:
                out.append(self._entry_json(repo, p, commit.files[p], expand))
            elif p == "" or any(f.startswith(p + "/") for f in commit.files):
                out.append(self._dir_json(commit, p))
        self._json(200, out)

    # ---- upload ----------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict) -> None:
        repo = self._get_repo(repo_type, repo_id, write=True)
        commit = self._commit_at(repo, revision)
        files = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = (f["path"].lower().endswith(LFS_SUFFIXES) or f.get("size", 0) >= LFS_MIN_SIZE or b"\0" in sample)
            existing = commit.files.get(f["path"])
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.sha256 else existing.oid
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> None:
        repo = self._get_repo(repo_type, repo_id, write=payload.get("operation") == "upload")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.base}/__lfs/{repo_type}/{repo_id}/{oid}"},
                    "verify": {"href": f"{self.base}/__lfs-verify/{repo_type}/{repo_id}"},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, repo_type: str, repo_id: str, oid: str, body: bytes) -> None:
        st = self.state
        with st.lock:
            repo = st.repos.get((repo_type, repo_id))
            if repo is None:
                raise HubError(404, "Repository not found", code="RepoNotFound")
            st.upload_requests += 1
            fault = None
            if st.upload_fault_after is not None and st.uploads >= st.upload_fault_after:
                if st.upload_fault_count is None or st.upload_fault_count > 0:
                    fault = st.upload_fault_mode
                    if st.upload_fault_count is not None:
                        st.upload_fault_count -= 1
        if fault == "hang":
            with st.lock:
                st.hanging += 1
            st.hang_release.wait(60)
            raise _DropConnection()
        if fault == "drop":
            raise _DropConnection()
        if fault == "503":
            raise HubError(503, "Service Unavailable (scripted)", headers={"Retry-After": "0"})
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "content does not match the announced sha256")
        with st.lock:
            repo.lfs[oid] = body
            st.uploads += 1
            st.uploaded_oids.append(oid)
        self._send(200, b"", content_type="text/plain", headers={"ETag": f'"{oid[:32]}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, payload: dict) -> None:
        repo = self._get_repo(repo_type, repo_id, write=True)
        oid = payload.get("oid")
        if oid not in repo.lfs or len(repo.lfs[oid]) != payload.get("size"):
            raise HubError(404, f"LFS object {oid} not found")
        self._json(200, {"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str, query: dict, body: bytes) -> None:
        st = self.state
        with st.lock:
            st.commit_requests += 1
        repo = self._get_repo(repo_type, repo_id, write=True)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        with st.lock:
            base = self._commit_at(repo, revision)
            if header.get("parentCommit") and header["parentCommit"] != base.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(base.files)
            stamp = f"{base.oid}{time.time_ns()}{header.get('summary')}"
            oid = hashlib.sha1(stamp.encode()).hexdigest()
            for line in lines[1:]:
                key, val = line["key"], line["value"]
                path = val["path"]
                if key == "file":
                    data = base64.b64decode(val["content"])
                    files[path] = FileEntry(len(data), git_blob_oid(data), data=data, last_commit=oid)
                elif key == "lfsFile":
                    sha = val["oid"]
                    if sha not in repo.lfs:
                        raise HubError(422, f"LFS file {path} ({sha}) was not uploaded")
                    size = len(repo.lfs[sha])
                    files[path] = FileEntry(size, git_blob_oid(lfs_pointer(sha, size)), sha256=sha, last_commit=oid)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HubError(400, f"unknown commit operation {key}")
            repo.commits[oid] = Commit(oid, base.oid, header.get("summary", ""), _now(), files)
            pr_url = None
            if create_pr:
                repo.prs += 1
                repo.refs[f"refs/pr/{repo.prs}"] = oid
                pr_url = f"{self.base}/{repo_type}s/{repo_id}/discussions/{repo.prs}"
            else:
                ref = revision if revision in repo.refs else None
                if ref is None:
                    raise HubError(400, f"cannot commit to a detached revision {revision}")
                repo.refs[ref] = oid
            st.commits += 1
        self._json(200, {"commitUrl": f"{self.base}/{repo_type}s/{repo_id}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": pr_url, "success": True})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str, payload: dict) -> None:
        repo = self._get_repo(repo_type, repo_id, write=True)
        with self.state.lock:
            if branch in repo.refs:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.refs[branch] = self._commit_at(repo, payload.get("startingPoint") or "main").oid
        self._json(200, {})

    # ---- download --------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_at(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = self.state.file_bytes(repo, entry)
        if path in self.state.serve_instead:       # scripted corruption: same size announced, other bytes
            data = self.state.file_bytes(repo, commit.files[self.state.serve_instead[path]])
            entry = FileEntry(len(data), entry.oid, entry.sha256)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        if entry.sha256:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        status = 200
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            m = re.match(r"bytes=(\d*)-(\d*)$", rng.strip())
            if not m:
                raise HubError(416, "bad range")
            if m.group(1) == "":
                start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            if start >= len(data) and len(data) > 0:
                raise HubError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream", head=self.command == "HEAD")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: HubState


class LoopbackHub:
    """``with LoopbackHub() as hub: hub.url, hub.state``; or ``start()`` / ``stop()``."""

    def __init__(self) -> None:
        self.state = HubState()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.hang_release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LoopbackHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, token: str | None = DEFAULT_TOKEN, hf_home: str | None = None) -> dict[str, str]:
        """Environment for a client process pointed at this server."""
        import os
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
                            "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")}
        env.update(HF_ENDPOINT=self.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
                   HF_HUB_DISABLE_IMPLICIT_TOKEN="0", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        if token is not None:
            env["HF_TOKEN"] = token
        if hf_home is not None:
            env["HF_HOME"] = hf_home
        return env
