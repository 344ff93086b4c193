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
