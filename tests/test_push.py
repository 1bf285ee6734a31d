"""``python -m builder push`` against a loopback Hub, through the real huggingface_hub and datasets clients.

The server runs in this process (stdlib only); every client runs in a subprocess whose environment points
``HF_ENDPOINT`` at it before huggingface_hub/datasets are imported (they read it at import time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_fixtures import CONFIGS, make_built_dataset  # noqa: E402
from loopback_hub import DEFAULT_TOKEN, LoopbackHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPO = "medground/medground-35k"
BAD_TOKEN = "hf_definitelyNOTvalidTOKEN987654321zyx"
OUTPUTS: list[str] = []     # every stdout/stderr of every client run, checked for tokens at the end


@pytest.fixture(scope="module")
def hub():
    with LoopbackHub() as h:
        h.state.tree_page_size = 7      # every listing (push plan, HfFileSystem globbing) follows Link pages
        yield h


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Built folders shared by the tests (copied before any change): 3 configs x 2 shards, 1 config, and a
    rebuild of the first with one shard per split and different content."""
    root = tmp_path_factory.mktemp("builds")
    return {"full": make_built_dataset(root / "full"),
            "small": make_built_dataset(root / "small", configs=("default",), assets=0),
            "rebuild": make_built_dataset(root / "rebuild", shards=1, salt="-v2")}


def copy_build(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_head_matches(hub, repo: str, build: Path) -> None:
    """The repo's main branch holds exactly the build's files (plus .gitattributes), byte for byte."""
    r = hub.state.repo(repo)
    files = hub.state.head_files(repo)
    local = {p.relative_to(build).as_posix(): p.read_bytes() for p in build.rglob("*") if p.is_file()}
    assert set(files) - {".gitattributes"} == set(local)
    for path, data in local.items():
        assert hub.state.file_bytes(r, files[path]) == data, path


def _env(hub: LoopbackHub, hf_home: str, token: str | None = DEFAULT_TOKEN) -> dict[str, str]:
    env = hub.env(token=token, hf_home=hf_home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def push(hub, hf_home, data: Path, repo: str, *args: str, token: str | None = DEFAULT_TOKEN,
         cwd: Path | None = None, dispatcher: bool = False) -> subprocess.CompletedProcess:
    """Run the push in a subprocess. ``dispatcher=True`` goes through ``python -m builder push`` (which
    imports every stage module first, ~4 s of CPU); otherwise ``python -m builder.push`` (same code)."""
    verbose = ["-v"] if "-v" in args else []
    entry = ["-m", "builder", *verbose, "push"] if dispatcher else ["-m", "builder.push", *verbose]
    cmd = [sys.executable, *entry, "--data", str(data), "--repo", repo, *[a for a in args if a != "-v"]]
    proc = subprocess.run(cmd, cwd=cwd or data.parent, env=_env(hub, hf_home, token), capture_output=True,
                          text=True, timeout=120)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    return proc


LOAD_SCRIPT = r"""
import hashlib, json, sys
import datasets
datasets.config.USE_PARQUET_EXPORT = False
repo, local, configs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")

def digest(ds):
    ds = ds.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    out = []
    for row in ds:
        row = dict(row)
        for col in ("image", "mask"):
            row[col] = hashlib.sha256(row[col]["bytes"]).hexdigest()
        out.append(row)
    return out

result = {}
for c in configs:
    remote = datasets.load_dataset(repo, c)
    here = datasets.load_dataset(local, c)
    result[c] = {"remote": {s: digest(remote[s]) for s in remote}, "local": {s: digest(here[s]) for s in here}}
print(json.dumps(result))
"""


def load_both(hub, hf_home, repo: str, local: Path, configs=CONFIGS) -> dict:
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, repo, str(local), ",".join(configs)],
                          cwd=local.parent, env=_env(hub, hf_home), capture_output=True, text=True, timeout=120)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def lfs_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix in (".parquet", ".png"))


def head(hub, repo: str) -> dict:
    return hub.state.head_files(repo)


def test_push_then_load_every_config_and_repush_is_a_no_op(hub, hf_home, builds):
    build = builds["full"]
    st = hub.state
    u0, c0 = st.uploads, st.commits
    proc = push(hub, hf_home, build, REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verify OK" in proc.stdout
    assert st.uploads - u0 == lfs_count(build) == 20          # 18 shards + 2 assets, each sent once
    assert st.commits - c0 == 1                                # everything fits in one commit
    assert_head_matches(hub, REPO, build)                      # incl. README.md, medground35k.py, build.json

    # load_dataset(repo, config) through the Hub equals load_dataset(local folder, config), every config/row.
    both = load_both(hub, hf_home, REPO, build)
    for config in CONFIGS:
        assert set(both[config]["remote"]) == {"train", "validation", "test"}
        assert both[config]["remote"] == both[config]["local"], config
        assert sum(len(v) for v in both[config]["remote"].values()) == 18

    # Same build again: no upload, no commit, still verified.
    u1, c1, r1 = st.uploads, st.commits, st.upload_requests
    again = push(hub, hf_home, build, REPO)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to upload" in again.stdout and "verify OK" in again.stdout
    assert (st.uploads, st.commits, st.upload_requests) == (u1, c1, r1)


def test_a_real_build_round_trips_through_the_hub(hub, hf_home, demo_build):
    """The demo that `make build` makes, pushed and loaded back: every config's rows equal the local ones."""
    repo = "medground/demo-end-to-end"
    proc = push(hub, hf_home, demo_build, repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verify OK" in proc.stdout
    assert not any(path.startswith("work/") for path in head(hub, repo))
    configs = sorted(p.name for p in (demo_build / "data").iterdir())
    assert {"default", "multi_object", "ct"} <= set(configs)
    both = load_both(hub, hf_home, repo, demo_build, configs)
    for config in configs:
        assert both[config]["remote"] == both[config]["local"], config
        assert all(both[config]["remote"].values()), config


def test_dry_run_lists_changes_and_touches_nothing(hub, hf_home, builds):
    u0, c0 = hub.state.uploads, hub.state.commits
    proc = push(hub, hf_home, builds["small"], "medground/dry", "--dry-run", dispatcher=True)
    assert proc.returncode == 0, proc.stderr
    assert "9 to add, 0 to update, 0 to delete, 0 unchanged" in proc.stdout
    assert "add       data/default/train-00000-of-00002.parquet" in proc.stdout
    assert "dry run: nothing uploaded" in proc.stdout
    assert (hub.state.uploads, hub.state.commits) == (u0, c0)
    assert ("dataset", "medground/dry") not in hub.state.repos


def test_killed_push_resumes_without_resending(hub, hf_home, builds, tmp_path):
    """The push process dies while uploads are in flight (the server holds every upload after the 5th, the
    test kills the client, the server drops the connections); the rerun sends only what had not landed."""
    repo = "medground/interrupted"
    build = builds["full"]
    st = hub.state
    st.fail_uploads_after(st.uploads + 5, mode="hang")
    u0, c0, n0 = st.uploads, st.commits, len(st.uploaded_oids)
    cmd = [sys.executable, "-m", "builder.push", "--data", str(build), "--repo", repo, "--no-verify"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(hub, hf_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while st.hanging == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert st.hanging > 0, "the push never reached the 6th upload"
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    OUTPUTS.extend([out, err])
    st.clear_faults()
    first = set(st.uploaded_oids[n0:])
    assert st.uploads - u0 == 5 and len(first) == 5 and st.commits == c0
    assert set(head(hub, repo)) == {".gitattributes"}          # nothing half-committed

    u1, n1 = st.uploads, len(st.uploaded_oids)
    rerun = push(hub, hf_home, build, repo, "--no-verify")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    second = set(st.uploaded_oids[n1:])
    assert st.uploads - u1 == lfs_count(build) - 5 == len(second)   # only what had not landed
    assert not first & second
    assert st.commits - c0 == 1
    assert_head_matches(hub, repo, build)


def test_503_on_commit_fails_then_rerun_sends_no_blob_again(hub, hf_home, builds):
    repo = "medground/commit-503"
    build = builds["small"]
    st = hub.state
    st.fail_next(r"/api/datasets/medground/commit-503/commit/", 503, count=100, headers={"Retry-After": "0"})
    u0, c0 = st.uploads, st.commits
    proc = push(hub, hf_home, build, repo, "--max-retries", "1", "--no-verify")
    st.clear_faults()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "HTTP 503, retries exhausted" in proc.stderr and "run the same command again" in proc.stderr
    assert st.uploads - u0 == lfs_count(build) and st.commits == c0   # blobs landed, no commit
    u1 = st.uploads
    rerun = push(hub, hf_home, build, repo, "--no-verify")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert st.uploads == u1 and st.commits - c0 == 1
    assert_head_matches(hub, repo, build)


def test_dropped_upload_connection_and_transient_503_are_retried_in_the_same_run(hub, hf_home, builds):
    repo = "medground/flaky"
    build = builds["small"]
    st = hub.state
    st.fail_uploads_after(st.uploads + 2, mode="drop", count=1)
    st.fail_next(r"/api/datasets/medground/flaky/commit/", 503, count=1, headers={"Retry-After": "0"})
    u0, r0, c0, cr0 = st.uploads, st.upload_requests, st.commits, st.commit_requests
    proc = push(hub, hf_home, build, repo, "--no-verify")
    st.clear_faults()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert st.uploads - u0 == lfs_count(build)
    assert st.upload_requests - r0 == lfs_count(build) + 1        # the dropped upload was sent once more
    assert st.commits - c0 == 1 and st.commit_requests - cr0 == 1  # the 503 came before the handler
    assert "HTTP 503; retrying" in proc.stderr
    assert_head_matches(hub, repo, build)


def test_429_retry_after_is_honoured(hub, hf_home, builds):
    repo = "medground/ratelimited"
    st = hub.state
    st.fail_next(r"/api/datasets/medground/ratelimited/commit/", 429, count=1, headers={"Retry-After": "1"})
    proc = push(hub, hf_home, builds["small"], repo, "--no-verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commit_events = [e for e in st.events if "/ratelimited/commit/" in e[2]]
    assert [e[3] for e in commit_events] == [429, 200]
    waited = commit_events[1][0] - commit_events[0][0]
    assert waited >= 1.0, waited
    assert "retrying in 1.0s (Retry-After)" in proc.stderr
    assert st.repo(repo).commits[st.repo(repo).refs["main"]].parent is not None   # one commit on top of init


def test_bad_token_gives_a_clear_401_message(hub, hf_home, builds):
    c0 = hub.state.commits
    proc = push(hub, hf_home, builds["small"], "medground/unauthorised", "-v", token=BAD_TOKEN)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "401" in proc.stderr and "HF_TOKEN" in proc.stderr and "hf auth login" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert hub.state.commits == c0 and ("dataset", "medground/unauthorised") not in hub.state.repos
    assert f"Bearer {BAD_TOKEN}" in hub.state.auth_headers_seen     # the token did reach the server...
    assert BAD_TOKEN not in proc.stdout + proc.stderr              # ...and nowhere else


def _commits_since(hub, repo: str, since: str) -> list:
    r = hub.state.repo(repo)
    chain, oid = [], r.refs["main"]
    while oid != since:
        chain.append(r.commits[oid])
        oid = r.commits[oid].parent
    return chain[::-1]


def test_rebuild_with_fewer_shards_leaves_no_stale_shard(hub, hf_home, builds, tmp_path):
    repo = "medground/rebuild"
    st, v1, v2 = hub.state, builds["full"], builds["rebuild"]
    build = copy_build(v1, tmp_path / "build")
    assert push(hub, hf_home, build, repo, "--no-verify").returncode == 0
    old = {p for p in head(hub, repo) if p.startswith("data/")}
    assert len(old) == 18

    # Rebuild in place with one shard per split: one commit adds the 9 new shards, the new card and
    # provenance, and deletes the 18 old shards.
    shutil.rmtree(build)
    copy_build(v2, build)
    before, c0 = st.repo(repo).refs["main"], st.commits
    second = push(hub, hf_home, build, repo)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "verify OK" in second.stdout
    assert "delete    data/default/train-00001-of-00002.parquet" in second.stdout
    assert_head_matches(hub, repo, build)
    (last,) = _commits_since(hub, repo, before)
    assert st.commits - c0 == 1 and not old & set(last.files)

    # Back to two shards with a 5-operation limit: data commits first, the card and all deletes last;
    # until then every old shard and the old card stay (the repo is never half-updated).
    shutil.rmtree(build)
    copy_build(v1, build)
    before, u0 = st.repo(repo).refs["main"], st.uploads
    old = {p for p in head(hub, repo) if p.startswith("data/")}
    old_card = head(hub, repo)["README.md"].oid
    third = push(hub, hf_home, build, repo, "--max-files-per-commit", "5", "--no-verify")
    assert third.returncode == 0, third.stdout + third.stderr
    assert st.uploads == u0                                       # these blobs were uploaded by the first push
    assert_head_matches(hub, repo, build)
    chain = _commits_since(hub, repo, before)
    assert len(chain) == 5                                        # 18 adds in 4 data commits + 1 final
    for c in chain[:-1]:
        parent = st.repo(repo).commits[c.parent].files
        touched = {p for p in set(c.files) | set(parent) if c.files.get(p) != parent.get(p)}
        assert 0 < len(touched) <= 5
        assert old <= set(c.files), "a stale shard vanished before the last commit"
        assert c.files["README.md"].oid == old_card, "the card changed before the last commit"
    assert not old & set(chain[-1].files) and chain[-1].files["README.md"].oid != old_card


def test_verification_reports_the_exact_mismatch(hub, hf_home, builds):
    """The Hub serves other bytes for one shard (as a broken mirror would): the push finds nothing to upload,
    but the verification streams the rows, names the config and split that fail, and exits 1."""
    repo = "medground/corrupt"
    build = builds["small"]
    assert push(hub, hf_home, build, repo, "--no-verify").returncode == 0
    hub.state.serve_instead["data/default/validation-00001-of-00002.parquet"] = \
        "data/default/test-00001-of-00002.parquet"
    try:
        proc = push(hub, hf_home, build, repo)
    finally:
        hub.state.clear_faults()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nothing to upload" in proc.stdout and "VERIFY FAILED" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "config 'default' split 'validation': rows cannot be read from the Hub" in proc.stdout, proc.stdout
    assert "verify: default/train: 6 row(s) compared, OK" in proc.stdout


def test_row_comparison_names_row_and_column():
    from builder.push import compare_rows
    local = [{"id": "a", "bbox": [0.0, 1.0, 2.0, 3.0], "image": {"bytes": b"PNG1", "path": None}}]
    remote = [{"id": "a", "bbox": [0.0, 1.0, 2.0, 3.5], "image": {"bytes": b"PNG2", "path": "x.png"}}]
    problems = compare_rows("config 'CT' split 'test'", remote, local)
    assert problems[0] == "config 'CT' split 'test' row 0 column 'bbox': Hub [0.0, 1.0, 2.0, 3.5] != local [0.0, 1.0, 2.0, 3.0]"
    assert problems[1].startswith("config 'CT' split 'test' row 0 column 'image': Hub <4 bytes sha256 ")
    same = [{"id": "a", "bbox": [0.0, 1.0, 2.0, 3.0], "image": {"bytes": b"PNG1", "path": "elsewhere.png"}}]
    assert compare_rows("x", same, local) == []                    # image paths may differ, bytes may not
    assert compare_rows("x", [], local) == ["x: 0 row(s) on the Hub, 1 locally in the sample"]


def test_create_pr_leaves_main_untouched(hub, hf_home, builds):
    repo = "medground/with-pr"
    build = builds["small"]
    proc = push(hub, hf_home, build, repo, "--create-pr")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = hub.state.repo(repo)
    assert set(head(hub, repo)) == {".gitattributes"}
    assert "refs/pr/1" in r.refs and "opened pull request" in proc.stdout
    assert "verify OK: datasets/medground/with-pr@refs/pr/1" in proc.stdout
    files = r.commits[r.refs["refs/pr/1"]].files
    assert set(files) - {".gitattributes"} == {p.relative_to(build).as_posix() for p in build.rglob("*")
                                               if p.is_file()}


def test_no_token_in_any_output(hub):
    assert OUTPUTS, "run the whole module"
    for text in OUTPUTS:
        assert DEFAULT_TOKEN not in text
        assert BAD_TOKEN not in text
