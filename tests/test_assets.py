"""Registry assets: checksums and a clear error when no registry is reachable."""

from __future__ import annotations

import time
import zipfile

import pytest

from calib_sweep import assets


def test_unreachable_registry_gives_one_clear_error(isolated_cache, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no local find-links or extra indexes either
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    start = time.monotonic()
    with pytest.raises(assets.AssetError) as err:
        assets.fetch("gensim_enwiki_sample")
    message = str(err.value)
    assert "could not fetch gensim==4.4.0" in message and "Fix:" in message and str(isolated_cache) in message
    assert time.monotonic() - start < 120
    assert not list((isolated_cache / "wheels").glob("*.whl"))  # nothing half-written


def test_checksum_mismatch_is_refused(isolated_cache):
    asset = assets.ASSETS["gensim_enwiki_sample"]
    wheels = isolated_cache / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "gensim-4.4.0-cp311-cp311-manylinux_x86_64.whl", "w") as fake:
        fake.writestr(asset.member, b"not the real file")
    with pytest.raises(assets.AssetError, match="checksum mismatch"):
        assets.fetch("gensim_enwiki_sample")
    assert [p for p in (isolated_cache / "assets").rglob("*") if p.is_file()] == []  # nothing half-written


def test_unknown_asset():
    with pytest.raises(KeyError, match="unknown asset"):
        assets.fetch("nope")


def _fake_split_asset(cache, monkeypatch, joined_sha: str | None = None) -> bytes:
    """Two fake wheels each holding one chunk, and a joined asset over them; returns the joined bytes."""
    import hashlib

    chunks = [b"first chunk|", b"second chunk"]
    wheels = cache / "wheels"
    wheels.mkdir(parents=True)
    table = dict(assets.ASSETS)
    for i, data in enumerate(chunks):
        name = f"fakepart{i}"
        with zipfile.ZipFile(wheels / f"{name}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{name}/data/model.part{i}", data)
        table[name] = assets.RegistryAsset(
            package=name, version="1.0", member=f"{name}/data/model.part{i}",
            sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        )
    joined = b"".join(chunks)
    table["fakejoined"] = assets.RegistryAsset(
        package="fakejoined", version="1.0", member="model.bin",
        sha256=joined_sha or hashlib.sha256(joined).hexdigest(), size=len(joined), parts=("fakepart0", "fakepart1"),
    )
    monkeypatch.setattr(assets, "ASSETS", table)
    return joined


def test_joined_asset_concatenates_verified_chunks_and_drops_them(isolated_cache, monkeypatch):
    joined = _fake_split_asset(isolated_cache, monkeypatch)
    path = assets.fetch("fakejoined")
    assert path.read_bytes() == joined
    assert path == isolated_cache / "assets" / "fakejoined-1.0" / "model.bin"
    leftovers = sorted(p.name for p in (isolated_cache / "assets").rglob("*") if p.is_file())
    assert leftovers == ["model.bin"]  # chunks removed once joined; their wheels stay cached
    assert assets.fetch("fakejoined") == path  # second call: no work, same file


def test_joined_asset_with_wrong_checksum_leaves_nothing(isolated_cache, monkeypatch):
    _fake_split_asset(isolated_cache, monkeypatch, joined_sha="0" * 64)
    with pytest.raises(assets.AssetError, match="checksum mismatch for model.bin joined from 2 chunks"):
        assets.fetch("fakejoined")
    assert not (isolated_cache / "assets" / "fakejoined-1.0" / "model.bin").exists()
    assert not list((isolated_cache / "assets").rglob("model.bin.part*"))


def test_gemma_chunks_add_up_to_the_joined_file():
    joined = assets.ASSETS["gemma3_270m_gguf"]
    parts = [assets.ASSETS[name] for name in joined.parts]
    assert len(parts) == 4 and sum(p.size for p in parts) == joined.size == 253_113_024
    assert [p.member.rsplit(".", 1)[-1] for p in parts] == ["part00", "part01", "part02", "part03"]
