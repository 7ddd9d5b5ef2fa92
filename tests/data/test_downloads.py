"""Checksum-verified, cached fetching — tested with file:// URLs, so no network is needed."""

import hashlib

import pytest

from llmlab.data import downloads
from llmlab.data.downloads import RemoteFile, fetch, sha256_file


def _remote(tmp_path, content: bytes, name="corpus.txt", sha=None):
    src = tmp_path / "server" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    return src, RemoteFile(name, src.as_uri(), sha or hashlib.sha256(content).hexdigest())


def test_fetch_downloads_verifies_and_caches(tmp_path):
    src, remote = _remote(tmp_path, b"to be or not to be\n")
    cache = tmp_path / "cache"
    path = fetch(remote, cache)
    assert path == cache / "corpus.txt" and path.read_bytes() == src.read_bytes()
    src.unlink()  # "offline" now: the cached copy is served
    assert fetch(remote, cache) == path


def test_bad_checksum_leaves_nothing_behind(tmp_path):
    _, remote = _remote(tmp_path, b"tampered", sha="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256"):
        fetch(remote, cache)
    assert not any(cache.iterdir())


def test_corrupted_cache_is_detected(tmp_path):
    _, remote = _remote(tmp_path, b"good")
    cache = tmp_path / "cache"
    fetch(remote, cache).write_bytes(b"bit rot")
    with pytest.raises(ValueError, match="corrupt"):
        fetch(remote, cache)


def test_local_path_is_verified(tmp_path):
    src, remote = _remote(tmp_path, b"mine")
    assert fetch(remote, local_path=src) == src
    with pytest.raises(ValueError):
        fetch(RemoteFile("x", "file:///nonexistent", "1" * 64), local_path=src)


def test_tiny_shakespeare_and_tiny_stories_parse_local_copies(tmp_path, monkeypatch):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 10
    src, remote = _remote(tmp_path, text.encode(), "tinyshakespeare.txt")
    monkeypatch.setattr(downloads, "TINY_SHAKESPEARE", remote)
    split = downloads.tiny_shakespeare(local_path=src)
    assert split["train"] + split["val"] == text
    assert len(split["val"]) == pytest.approx(0.1 * len(text), abs=1)

    stories = "\n".join(f"Once upon a time {i}.\n<|endoftext|>" for i in range(20))
    src, remote = _remote(tmp_path, stories.encode(), "TinyStories-valid.txt")
    monkeypatch.setattr(downloads, "TINY_STORIES_VALID", remote)
    split = downloads.tiny_stories(cache=tmp_path / "c", val_fraction=0.25)
    assert len(split["train"]) == 15 and split["val"][0] == "Once upon a time 15."
    assert sha256_file(tmp_path / "c" / "TinyStories-valid.txt") == remote.sha256


def test_pinned_checksums_are_well_formed():
    for remote in (downloads.TINY_SHAKESPEARE, downloads.TINY_STORIES_VALID):
        assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0
        assert remote.url.startswith("https://")
