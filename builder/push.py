"""``python -m builder push``: publish a built folder to a Hugging Face dataset repo, then prove it loads.

The folder is the build's output (``README.md`` with YAML ``configs:``, ``data/<config>/*.parquet``,
optional ``assets/``, ``medground35k.py``, ``build.json``). The push

1. checks the folder (card present, every ``data_files`` pattern of the card matches a local file, no
   text file contains the Hub token);
2. creates the dataset repo if needed (``exist_ok``) and lists the remote tree at the target revision;
3. plans by content: a local file whose sha256 (LFS) or git blob sha1 (regular) equals the remote one
   is unchanged and never sent; remote files under ``data/`` and ``assets/`` that the build no longer
   has are stale and will be deleted;
4. pre-uploads the changed content (LFS blobs already on the Hub are skipped by sha256, so a rerun after
   an interruption sends only what had not landed), then commits: one commit when the changes fit under
   the per-commit limit, otherwise data commits first and a last commit carrying the card, the builder
   script, the provenance and every delete: stale shards disappear in the commit that makes the card
   point at their replacements;
5. verifies: the remote tree equals the local folder by hash, the README round-trips, and for every
   config of the card the first rows of every split streamed from the Hub with ``datasets`` equal the
   rows read from the local folder (ids, queries, boxes, image bytes: every column).

Transient failures (429, 5xx, dropped connections) are retried with exponential backoff; a
``Retry-After`` header is honoured. Pushing an unchanged build makes no upload and no commit.
The token comes from ``HF_TOKEN`` or the saved login and is never printed.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_REPO = "medground/medground-35k"
MAX_OPS_PER_COMMIT = 99                 # "under 100 files per commit"
MANAGED_PREFIXES = ("data/", "assets/")  # remote files here that the build lacks are stale
LAST_FILES = ("README.md", "medground35k.py", "build.json")   # travel in the last commit
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
# What a build folder publishes; anything else beside it (candidates/, caches, reports) stays local.
PUBLISH_PATTERNS = ("README.md", "data/*", "assets/*", "medground35k.py", "build.json", "LICENSE*", "CITATION*")
TEXT_SUFFIXES = (".md", ".json", ".py", ".toml", ".yaml", ".yml", ".txt", ".csv", ".jsonl", ".cfg", ".ini")

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR, EXIT_AUTH = 0, 1, 2, 3


class PushError(RuntimeError):
    """A push that cannot go on; the message is safe to print (no token)."""


class AuthError(PushError):
    pass


# ---------------------------------------------------------------------------------------------------
# Local folder
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalFile:
    path: str        # path in the repo (posix)
    abspath: Path
    size: int
    sha256: str
    git_oid: str     # git blob sha1 of the content (what the Hub reports for regular files)


def hash_file(path: Path) -> tuple[str, str]:
    """sha256 and git blob sha1 of a file, in one read."""
    size = path.stat().st_size
    h256, h1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h256.update(chunk)
            h1.update(chunk)
    return h256.hexdigest(), h1.hexdigest()


def _skip(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts) or rel.name.endswith(".tmp")


def scan_folder(root: Path, patterns: tuple[str, ...] = PUBLISH_PATTERNS) -> dict[str, LocalFile]:
    files: dict[str, LocalFile] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or _skip(rel) or not any(fnmatch.fnmatch(rel.as_posix(), pat) for pat in patterns):
            continue
        sha256, git_oid = hash_file(p)
        files[rel.as_posix()] = LocalFile(rel.as_posix(), p, p.stat().st_size, sha256, git_oid)
    return files


def read_card_metadata(readme: Path) -> dict[str, Any]:
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        raise PushError(f"{readme}: YAML header is not closed by a '---' line")
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError as e:
        raise PushError(f"{readme}: invalid YAML header: {e}") from None
    if not isinstance(meta, dict):
        raise PushError(f"{readme}: YAML header must be a mapping")
    return meta


def card_configs(meta: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """``{config_name: {split: [patterns]}}`` from the card's ``configs:``."""
    out: dict[str, dict[str, list[str]]] = {}
    for cfg in meta.get("configs") or []:
        name = cfg.get("config_name", "default")
        data_files = cfg.get("data_files", [])
        splits: dict[str, list[str]] = {}
        if isinstance(data_files, str):
            splits["train"] = [data_files]
        elif isinstance(data_files, dict):
            splits = {k: [v] if isinstance(v, str) else list(v) for k, v in data_files.items()}
        else:
            for item in data_files:
                if isinstance(item, str):
                    splits.setdefault("train", []).append(item)
                else:
                    p = item.get("path")
                    splits.setdefault(item.get("split", "train"), []).extend([p] if isinstance(p, str) else p)
        out[name] = splits
    return out


def check_folder(root: Path, files: dict[str, LocalFile], token: str | None) -> dict[str, dict[str, list[str]]]:
    if not root.is_dir():
        raise PushError(f"{root}: no such build folder (run `make build` first)")
    if "README.md" not in files:
        raise PushError(f"{root}: README.md (the dataset card) is missing; the build writes it")
    configs = card_configs(read_card_metadata(root / "README.md"))
    if not configs:
        raise PushError(f"{root / 'README.md'}: the YAML header has no `configs:` with data_files")
    for name, splits in configs.items():
        for split, patterns in splits.items():
            if not any(fnmatch.fnmatch(p, pat) for pat in patterns for p in files):
                raise PushError(f"config '{name}' split '{split}': no file in {root} matches {patterns}")
    if token:
        needle = token.encode()
        for f in files.values():
            if f.path.endswith(TEXT_SUFFIXES) and f.size < 50_000_000 and needle in f.abspath.read_bytes():
                raise PushError(f"{f.abspath} contains your Hub token; refusing to publish it")
    return configs


# ---------------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------------

@dataclass
class RemoteFile:
    path: str
    size: int
    blob_id: str
    sha256: str | None   # set for LFS files


@dataclass
class PushPlan:
    adds: list[LocalFile] = field(default_factory=list)
    updates: list[LocalFile] = field(default_factory=list)
    deletes: list[RemoteFile] = field(default_factory=list)
    unchanged: list[LocalFile] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.adds or self.updates or self.deletes)

    def lines(self) -> list[str]:
        out = []
        for kind, items in (("add", self.adds), ("update", self.updates), ("delete", self.deletes),
                            ("unchanged", self.unchanged)):
            out += [f"  {kind:<9} {f.path}  ({_human(f.size)})" for f in items]
        return out

    def summary(self) -> str:
        return (f"{len(self.adds)} to add, {len(self.updates)} to update, {len(self.deletes)} to delete, "
                f"{len(self.unchanged)} unchanged")


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def same_content(local: LocalFile, remote: RemoteFile) -> bool:
    if remote.sha256 is not None:
        return remote.sha256 == local.sha256
    return remote.blob_id == local.git_oid


def make_plan(local: dict[str, LocalFile], remote: dict[str, RemoteFile]) -> PushPlan:
    plan = PushPlan()
    for path, f in local.items():
        r = remote.get(path)
        if r is None:
            plan.adds.append(f)
        elif same_content(f, r):
            plan.unchanged.append(f)
        else:
            plan.updates.append(f)
    plan.deletes = [r for p, r in sorted(remote.items()) if p not in local and p.startswith(MANAGED_PREFIXES)]
    return plan


# ---------------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------------

def _http_status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_retryable(exc: BaseException) -> bool:
    import httpx2
    for e in _chain(exc):
        if _http_status(e) in RETRY_STATUS:
            return True
        if isinstance(e, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return True
    return False


def retry_after(exc: BaseException) -> float | None:
    for e in _chain(exc):
        resp = getattr(e, "response", None)
        value = resp.headers.get("Retry-After") if resp is not None else None
        if value is not None and value.strip().replace(".", "", 1).isdigit():
            return float(value)
    return None


def is_auth_error(exc: BaseException) -> bool:
    return any(_http_status(e) == 401 for e in _chain(exc))


@dataclass
class Retrier:
    max_retries: int = 5
    base_wait: float = 1.0
    max_wait: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    waits: list[float] = field(default_factory=list)

    def call(self, what: str, fn: Callable[[], Any], before_retry: Callable[[], Any] | None = None) -> Any:
        """Run ``fn``; on a transient failure wait (``Retry-After`` if given, else exponential backoff) and
        retry. ``before_retry`` runs before each retry and may return ``StopRetry`` to end early."""
        wait = self.base_wait
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below
                if is_auth_error(exc) or not is_retryable(exc) or attempt == self.max_retries:
                    raise
                ra = retry_after(exc)
                delay = ra if ra is not None else wait
                status = next((s for e in _chain(exc) if (s := _http_status(e))), None)
                reason = f"HTTP {status}" if status else type(exc).__name__
                print(f"  {what}: {reason}; retrying in {delay:.1f}s"
                      f"{' (Retry-After)' if ra is not None else ''} [{attempt + 1}/{self.max_retries}]",
                      file=sys.stderr, flush=True)
                self.waits.append(delay)
                self.sleep(delay)
                wait = min(self.max_wait, wait * 2)
                if before_retry is not None and before_retry() is StopRetry:
                    return None
        raise AssertionError("unreachable")


class StopRetry:
    """Returned by a ``before_retry`` hook when the work turned out to be done already."""


# ---------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------

@dataclass
class PushReport:
    repo_id: str
    revision: str
    plan: PushPlan
    commits: list[str] = field(default_factory=list)
    pr_url: str | None = None
    verified: bool | None = None
    mismatches: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_MISMATCH if self.mismatches else EXIT_OK


def resolve_token(token: str | None = None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token
    return get_token()


def _token_source() -> str:
    return "the HF_TOKEN environment variable" if os.environ.get("HF_TOKEN") else "your saved Hub login"


def _auth_message(repo_id: str) -> str:
    return (f"the Hub rejected the token from {_token_source()} (401 Unauthorized) while pushing to "
            f"{repo_id}. Set HF_TOKEN to a valid token with write access to the namespace, or run "
            "`hf auth login` (the token is not shown here).")


class _Scrubber(logging.Filter):
    """Masks the token in any log record, in case a library ever formats it into a message."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if self.token in msg:
            record.msg, record.args = msg.replace(self.token, "***"), None
        return True


def _remote_tree(api, repo_id: str, revision: str, retrier: Retrier) -> dict[str, RemoteFile]:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    def listing():
        out = {}
        for item in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset"):
            if isinstance(item, RepoFile):
                out[item.path] = RemoteFile(item.path, item.size, item.blob_id,
                                            item.lfs.sha256 if item.lfs else None)
        return out

    try:
        return retrier.call("list remote files", listing)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return {}


def _split_commits(adds: list, deletes: list, limit: int) -> list[list]:
    """Data adds first in chunks; the last commit carries the card, script, provenance and all deletes."""
    last = [op for op in adds if op.path_in_repo in LAST_FILES]
    data = [op for op in adds if op.path_in_repo not in LAST_FILES]
    final = last + deletes
    if len(data) + len(final) <= limit:
        return [data + final]
    room = max(0, limit - len(final))
    head, tail = (data[:len(data) - room], data[len(data) - room:]) if room else (data, [])
    chunks = [head[i:i + limit] for i in range(0, len(head), limit)]
    return chunks + [tail + final]


def push_folder(data_dir: Path | str, repo_id: str = DEFAULT_REPO, *, private: bool = False,
                revision: str | None = None, create_pr: bool = False, dry_run: bool = False,
                verify: bool = True, sample_rows: int = 8, token: str | None = None,
                max_retries: int = 5, max_ops_per_commit: int = MAX_OPS_PER_COMMIT,
                commit_message: str | None = None, out=print) -> PushReport:
    """Push the built folder ``data_dir`` to the dataset repo ``repo_id`` (see module doc).
    Returns a :class:`PushReport`; raises :class:`AuthError` / :class:`PushError` with printable messages."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    root = Path(data_dir)
    branch = revision or "main"
    token = resolve_token(token)
    scrubber = _Scrubber(token) if token else None
    handlers = list(logging.getLogger().handlers)
    for h in handlers if scrubber else []:
        h.addFilter(scrubber)
    retrier = Retrier(max_retries=max_retries)
    api = HfApi(token=token)
    try:
        files = scan_folder(root) if root.is_dir() else {}
        if root.is_dir():
            skipped = sorted({p.relative_to(root).parts[0] + ("/" if p.is_dir() else "") for p in root.iterdir()
                              if not p.name.startswith(".")} - {f.split("/")[0] + ("/" if "/" in f else "")
                                                                 for f in files})
            if skipped:
                out(f"not published (not part of the Hub repo): {', '.join(skipped)}")
        configs = check_folder(root, files, token)
        if not token and not dry_run:
            raise AuthError("no Hub token: set HF_TOKEN or run `hf auth login` (a write token is needed to push)")
        if token:
            who = retrier.call("check token", lambda: api.whoami())
            log.info("authenticated as %s", who.get("name"))
        if not dry_run:
            retrier.call("create repo", lambda: api.create_repo(repo_id, repo_type="dataset", private=private,
                                                                exist_ok=True))
            if branch != "main":
                retrier.call("create branch", lambda: api.create_branch(repo_id, branch=branch,
                                                                        repo_type="dataset", exist_ok=True))
        remote = _remote_tree(api, repo_id, branch, retrier)
        plan = make_plan(files, remote)
        report = PushReport(repo_id, branch, plan, dry_run=dry_run)
        out(f"push {root} -> datasets/{repo_id}@{branch}: {plan.summary()}")
        if dry_run:
            for line in plan.lines():
                out(line)
            out("dry run: nothing uploaded, nothing committed")
            return report
        for line in plan.lines():
            if not line.lstrip().startswith("unchanged"):
                out(line)

        if plan.changed:
            adds = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.abspath))
                    for f in plan.adds + plan.updates]
            deletes = [CommitOperationDelete(path_in_repo=r.path) for r in plan.deletes]
            # Hashes are known already: hand them over so the client does not read the files again.
            for op in adds:
                op.upload_info.sha256 = bytes.fromhex(files[op.path_in_repo].sha256)
            # 1. Every changed blob goes up before any commit (the Hub skips blobs it already has).
            retrier.call("upload", lambda: api.preupload_lfs_files(
                repo_id, additions=adds, repo_type="dataset", revision=branch, create_pr=create_pr,
                free_memory=False))
            # 2. Commits: data first, the card and the deletes last.
            chunks = _split_commits(adds, deletes, max_ops_per_commit)
            target = branch
            build_id = _build_id(root)
            for i, ops in enumerate(chunks, 1):
                part = f" (part {i}/{len(chunks)})" if len(chunks) > 1 else ""
                msg = (commit_message or f"Publish MedGround build {build_id}") + part
                info = _commit(api, repo_id, target, ops, msg, create_pr and i == 1, retrier, files)
                if info is not None:
                    report.commits.append(info.oid)
                    out(f"committed {len(ops)} operation(s){part}: {info.oid}")
                    if create_pr and i == 1 and info.pr_url:
                        report.pr_url = info.pr_url
                        target = f"refs/pr/{info.pr_url.rstrip('/').rsplit('/', 1)[-1]}"
                        report.revision = target
            if report.pr_url:
                out(f"opened pull request {report.pr_url}; merge it to publish on {branch}")
        else:
            out("nothing to upload: the Hub already has this build")

        if verify:
            report.mismatches = verify_push(api, repo_id, root, files, configs, report.revision,
                                            sample_rows=sample_rows, retrier=retrier, out=out)
            report.verified = not report.mismatches
        return report
    except (LocalTokenNotFoundError,) as e:
        raise AuthError("no Hub token: set HF_TOKEN or run `hf auth login`") from e
    except PushError:
        raise
    except Exception as e:
        if is_auth_error(e):
            raise AuthError(_auth_message(repo_id)) from None
        if is_retryable(e):
            status = next((s for x in _chain(e) if (s := _http_status(x))), None)
            why = f"HTTP {status}" if status else type(e).__name__
            raise PushError(_scrub(f"push interrupted ({why}, retries exhausted); run the same command again "
                                   "to resume: content that already landed is not sent twice", token)) from None
        if isinstance(e, HfHubHTTPError):
            raise PushError(_scrub(f"Hub request failed: {e}", token)) from None
        raise
    finally:
        for h in handlers if scrubber else []:
            h.removeFilter(scrubber)


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _build_id(root: Path) -> str:
    p = root / "build.json"
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    return "(no build.json)"


def _commit(api, repo_id: str, revision: str, ops: list, message: str, create_pr: bool, retrier: Retrier,
            files: dict[str, LocalFile]):
    """One commit, retried on transient errors. A commit whose response was lost may have landed: before
    each retry the remote tree is read again and operations already applied are dropped, so a retry never
    makes a duplicate commit."""
    from huggingface_hub import CommitOperationAdd

    pending = list(ops)

    def attempt():
        return api.create_commit(repo_id, operations=pending, commit_message=message, repo_type="dataset",
                                 revision=revision, create_pr=create_pr)

    def refresh():
        if create_pr:
            return None   # a lost PR-creating commit cannot be matched by tree; retry as is
        remote = _remote_tree(api, repo_id, revision, Retrier(max_retries=retrier.max_retries))
        still = []
        for op in pending:
            r = remote.get(op.path_in_repo)
            if isinstance(op, CommitOperationAdd):
                if r is None or not same_content(files[op.path_in_repo], r):
                    still.append(op)
            elif r is not None:
                still.append(op)
        if len(still) < len(pending):
            print(f"  commit: {len(pending) - len(still)} operation(s) already on the Hub, not repeated",
                  file=sys.stderr, flush=True)
        pending[:] = still
        return StopRetry if not pending else None

    return retrier.call("commit", attempt, before_retry=refresh)


# ---------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------

def _comparable(value: Any) -> Any:
    """Rows with decoding off: images are ``{"bytes", "path"}``; compare the bytes only."""
    if isinstance(value, dict):
        if "bytes" in value and "path" in value:
            return value["bytes"]
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    return value


def _describe(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes sha256 {hashlib.sha256(value).hexdigest()[:12]}>"
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def compare_rows(where: str, remote_rows: list[dict], local_rows: list[dict]) -> list[str]:
    problems = []
    if len(remote_rows) != len(local_rows):
        problems.append(f"{where}: {len(remote_rows)} row(s) on the Hub, {len(local_rows)} locally in the sample")
    for i, (r, l) in enumerate(zip(remote_rows, local_rows)):
        if set(r) != set(l):
            problems.append(f"{where} row {i}: columns differ: Hub {sorted(r)} vs local {sorted(l)}")
            continue
        for col in l:
            rv, lv = _comparable(r[col]), _comparable(l[col])
            if rv != lv:
                problems.append(f"{where} row {i} column '{col}': Hub {_describe(rv)} != local {_describe(lv)}")
    return problems


def _first_rows(ds, n: int) -> list[dict]:
    ds = ds.decode(False) if hasattr(ds, "decode") else ds
    return list(ds.take(n))


def verify_push(api, repo_id: str, root: Path, files: dict[str, LocalFile],
                configs: dict[str, dict[str, list[str]]], revision: str, *, sample_rows: int = 8,
                retrier: Retrier | None = None, out=print) -> list[str]:
    """Returns the list of mismatches (empty = the Hub serves exactly the local build)."""
    import datasets
    from huggingface_hub import hf_hub_download

    datasets.config.USE_PARQUET_EXPORT = False   # read our shards, not the viewer's export
    retrier = retrier or Retrier()
    problems: list[str] = []

    # 1. Files: the remote tree holds every local file with the same content, and no stale data file.
    remote = _remote_tree(api, repo_id, revision, retrier)
    for path, f in files.items():
        r = remote.get(path)
        if r is None:
            problems.append(f"{path}: missing on the Hub")
        elif not same_content(f, r):
            problems.append(f"{path}: content on the Hub differs (remote {r.sha256 or r.blob_id}, "
                            f"local {f.sha256 if r.sha256 else f.git_oid})")
    for path in remote:
        if path not in files and path.startswith(MANAGED_PREFIXES):
            problems.append(f"{path}: stale file on the Hub (not in the local build)")
    out(f"verify: {len(remote)} file(s) on the Hub, {len(files)} local")

    # 2. The card round-trips.
    sha = api.dataset_info(repo_id, revision=revision).sha
    readme = retrier.call("fetch README", lambda: hf_hub_download(
        repo_id, "README.md", repo_type="dataset", revision=sha, token=api.token))
    if Path(readme).read_bytes() != (root / "README.md").read_bytes():
        problems.append("README.md: the card fetched from the Hub differs from the local one")

    # 3. Every config loads from the Hub and its first rows equal the local ones.
    for name, splits in configs.items():
        try:
            remote_ds = retrier.call(f"load {name}", lambda: datasets.load_dataset(
                repo_id, name, streaming=True, revision=sha, token=api.token))
        except Exception as e:  # noqa: BLE001 - any failure to open is a verification failure
            if is_auth_error(e):
                raise
            problems.append(f"config '{name}': cannot be loaded from the Hub: {type(e).__name__}: {e}")
            continue
        local_ds = datasets.load_dataset(str(root), name, streaming=True)
        if set(remote_ds) != set(local_ds):
            problems.append(f"config '{name}': splits on the Hub {sorted(remote_ds)} != local {sorted(local_ds)}")
        for split in sorted(set(remote_ds) & set(local_ds)):
            try:
                rrows = retrier.call(f"read {name}/{split}", lambda: _first_rows(remote_ds[split], sample_rows))
            except Exception as e:  # noqa: BLE001
                if is_auth_error(e):
                    raise
                problems.append(f"config '{name}' split '{split}': rows cannot be read from the Hub: "
                                f"{type(e).__name__}: {e}")
                out(f"verify: {name}/{split}: unreadable on the Hub")
                continue
            lrows = _first_rows(local_ds[split], sample_rows)
            found = compare_rows(f"config '{name}' split '{split}'", rrows, lrows)
            problems += found
            out(f"verify: {name}/{split}: {len(rrows)} row(s) compared, "
                f"{'OK' if not found else f'{len(found)} mismatch(es)'}")
    if problems:
        out("VERIFY FAILED:")
        for p in problems:
            out(f"  {p}")
    else:
        out(f"verify OK: datasets/{repo_id}@{revision} serves the local build ({len(configs)} config(s))")
    return problems


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("push", help="publish a built folder to the Hugging Face Hub, then verify it loads",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="out/demo", help="built folder (README.md, data/, ...); default out/demo")
    p.add_argument("--repo", default=DEFAULT_REPO, help=f"dataset repo ORG/NAME; default {DEFAULT_REPO}")
    p.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--dry-run", action="store_true", help="list adds/updates/deletes/unchanged; upload nothing")
    p.add_argument("--no-verify", action="store_true", help="skip the post-push load check")
    p.add_argument("--verify-rows", type=int, default=8, help="rows per split compared after the push")
    p.add_argument("--max-retries", type=int, default=5, help="retries per request on 429/5xx/network errors")
    p.add_argument("--max-files-per-commit", type=int, default=MAX_OPS_PER_COMMIT)
    p.add_argument("-m", "--message", default=None, help="commit message")
    p.set_defaults(func=run)


def run(args) -> int:
    if not getattr(args, "verbose", False):
        for name in ("httpx2", "httpcore2", "httpx", "httpcore", "fsspec"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        report = push_folder(args.data, args.repo, private=args.private, revision=args.revision,
                             create_pr=args.create_pr, dry_run=args.dry_run, verify=not args.no_verify,
                             sample_rows=args.verify_rows, max_retries=args.max_retries,
                             max_ops_per_commit=args.max_files_per_commit, commit_message=args.message)
    except AuthError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_AUTH
    except PushError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """``python -m builder.push ...``: the same command without the stage dispatcher (which imports every
    stage module first); ``python -m builder push ...`` is the documented entry point."""
    parser = argparse.ArgumentParser(prog="python -m builder.push")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(argv if argv is not None else sys.argv[1:])
    flags = [a for a in argv if a in ("-v", "--verbose")]
    args = parser.parse_args([*flags, "push", *[a for a in argv if a not in flags]])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
