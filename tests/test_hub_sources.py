"""Hub calibration sources (conf/dataset/{c4,cnn_dailymail,redpajama,refinedweb,wikipedia,wikitext,pile}).

The Hub is not reachable here, so each source is read by the real loader (``datasets.load_dataset``)
from small local fixture files laid out and typed like the Hub repo's, with only the location fields
overridden.  Also: legacy names refused at validation (case C01), the one-line offline error, the
document cache, and that every Hub config composes.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import calib_sweep.data.hub as hub
from calib_sweep.data import load_documents, validate_source
from calib_sweep.errors import ConfigError
from helpers import compose_cfg

CONF_DATASET = Path(hub.__file__).resolve().parent.parent / "conf" / "dataset"
HUB_CONFIGS = sorted(p.stem for p in CONF_DATASET.glob("*.yaml") if OmegaConf.load(p).get("loader") == "hub")


@pytest.fixture
def load_spy(monkeypatch, isolated_cache, tmp_path):
    """Record every ``datasets.load_dataset`` call (kwargs and result type); datasets' cache in tmp."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    calls = []
    real = datasets.load_dataset

    def spy(path, name=None, **kwargs):
        result = real(path, name, **kwargs)
        calls.append({"path": path, "name": name, **kwargs, "result": type(result).__name__})
        return result

    monkeypatch.setattr(datasets, "load_dataset", spy)
    return calls


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _jsonl(path: Path, rows: list[dict], opener=open) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _c4_rows(shard: int, n: int) -> list[dict]:
    return [
        {"text": f"c4 shard {shard} document {i}.", "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{shard}/{i}"}
        for i in range(n)
    ]


def _c4_mirror(root: Path, card: bool = False) -> Path:
    _jsonl(root / "en" / "c4-train.00000-of-01024.json.gz", _c4_rows(0, 30), gzip.open)
    _jsonl(root / "en" / "c4-train.00001-of-01024.json.gz", _c4_rows(1, 30), gzip.open)  # not in data_files
    if card:  # the dataset card of allenai/c4 declares its configs
        (root / "README.md").write_text(
            "---\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n    path: en/c4-train.*.json.gz\n"
            "- config_name: realnewslike\n  data_files:\n  - split: train\n    path: realnewslike/c4-train.*.json.gz\n---\n# C4\n"
        )
    return root


# ------------------------------------------------------------------------------------------------
# Each source on fixture files


def test_c4_streams_the_named_shard_and_honours_max_documents(tmp_path, load_spy):
    root = _c4_mirror(tmp_path / "c4")
    cfg = compose_cfg(["dataset=c4", f"dataset.path={root}", "dataset.max_documents=12"])
    docs = load_documents(cfg.dataset)
    assert [d.doc_id for d in docs] == [f"c4:{i}" for i in range(12)]
    assert [d.text for d in docs] == [f"c4 shard 0 document {i}." for i in range(12)]
    (call,) = load_spy
    assert call["streaming"] is True and call["result"] == "IterableDataset"
    assert call["split"] == "train" and call["data_files"] == {"train": "en/c4-train.00000-of-01024.json.gz"}
    assert call["name"] is None  # a mirror without the dataset card has only the default config


def test_c4_mirror_with_dataset_card_passes_the_config_name(tmp_path, load_spy):
    root = _c4_mirror(tmp_path / "c4", card=True)
    docs = load_documents(compose_cfg(["dataset=c4", f"dataset.path={root}"]).dataset)
    assert len(docs) == 30 and docs[-1].text == "c4 shard 0 document 29."  # only shard 0, all of it (< 20000)
    assert load_spy[0]["name"] == "en"


def test_cnn_dailymail_reads_articles_across_shards_with_story_ids(tmp_path, load_spy):
    root = tmp_path / "cnn"
    for shard in range(2):
        _parquet(
            root / "3.0.0" / f"train-0000{shard}-of-00002.parquet",
            [{"article": f"(CNN) story {shard}-{i}.", "highlights": f"h{shard}{i}", "id": f"{shard:02d}{i:038x}"} for i in range(4)],
        )
    _parquet(root / "3.0.0" / "validation-00000-of-00001.parquet", [{"article": "val", "highlights": "v", "id": "ff"}])
    docs = load_documents(compose_cfg(["dataset=cnn_dailymail", f"dataset.path={root}"]).dataset)
    assert [d.text for d in docs] == [f"(CNN) story {s}-{i}." for s in range(2) for i in range(4)]
    assert docs[0].doc_id == f"cnn_dailymail:00{0:038x}" and docs[5].doc_id == f"cnn_dailymail:01{1:038x}"
    assert load_spy[0]["streaming"] is True


def test_wikitext_groups_line_rows_into_articles(tmp_path, load_spy):
    lines = [
        "", " = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 is a game .\n", "",
        " = = Gameplay = = \n", "", " The game is played in turns .\n",
        " = Tower Building of the Little Rock Arsenal = \n", "", " The tower is in Little Rock .\n",
        " = Robert Boulter = \n", " Robert Boulter is an actor .\n", "",
    ]
    root = tmp_path / "wikitext"
    _parquet(root / "wikitext-2-raw-v1" / "train-00000-of-00001.parquet", [{"text": t} for t in lines])
    _parquet(root / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet", [{"text": " = Test = \n"}, {"text": " x\n"}])
    docs = load_documents(compose_cfg(["dataset=wikitext", f"dataset.path={root}"]).dataset)
    assert [d.doc_id for d in docs] == ["wikitext:0", "wikitext:1", "wikitext:2"]
    assert docs[0].text.startswith("= Valkyria Chronicles III =")
    assert " = = Gameplay = = " in docs[0].text and docs[0].text.endswith("The game is played in turns .")
    assert docs[1].text == "= Tower Building of the Little Rock Arsenal = \n\n The tower is in Little Rock ."
    assert docs[2].text == "= Robert Boulter = \n Robert Boulter is an actor ."
    assert load_spy[0]["streaming"] is False and load_spy[0]["result"] == "Dataset"
    two = load_documents(compose_cfg(["dataset=wikitext", f"dataset.path={root}", "dataset.max_documents=2",
                                      "dataset.name=wikitext_2docs"]).dataset)
    assert [d.doc_id for d in two] == ["wikitext_2docs:0", "wikitext_2docs:1"]


def test_refinedweb_reads_content_of_the_first_shard(tmp_path, load_spy):
    root = tmp_path / "refinedweb"
    _parquet(root / "data" / "train-00000-of-05534-b8fc5348cbe605a5.parquet",
             [{"content": f"web page {i}", "url": f"https://w/{i}", "dump": "CC-MAIN-2023-06"} for i in range(25)])
    _parquet(root / "data" / "train-00001-of-05534-0123456789abcdef.parquet",
             [{"content": "other shard", "url": "https://w/x", "dump": "CC-MAIN-2023-06"}])
    docs = load_documents(compose_cfg(["dataset=refinedweb", f"dataset.path={root}", "dataset.max_documents=20"]).dataset)
    assert [d.text for d in docs] == [f"web page {i}" for i in range(20)]
    assert docs[19].doc_id == "refinedweb:19"


def test_wikipedia_uses_page_ids(tmp_path, load_spy):
    root = tmp_path / "wikipedia"
    rows = [{"id": str(pid), "url": f"https://en.wikipedia.org/wiki?curid={pid}", "title": f"T{pid}", "text": f"Article {pid}."}
            for pid in (12, 25, 39, 290)]
    _parquet(root / "20231101.en" / "train-00000-of-00041.parquet", rows)
    docs = load_documents(compose_cfg(["dataset=wikipedia", f"dataset.path={root}", "dataset.max_documents=3"]).dataset)
    assert [(d.doc_id, d.text) for d in docs] == [("wikipedia:12", "Article 12."), ("wikipedia:25", "Article 25."),
                                                  ("wikipedia:39", "Article 39.")]


def test_redpajama_interleaves_its_subset_files(tmp_path, load_spy):
    root = tmp_path / "redpajama"
    for subset, n in (("arxiv", 3), ("book", 1), ("c4", 3)):
        _jsonl(root / f"{subset}_sample.jsonl", [{"text": f"{subset} {i}", "meta": "{}"} for i in range(n)])
    docs = load_documents(compose_cfg(["dataset=redpajama", f"dataset.path={root}", "dataset.max_documents=6"]).dataset)
    assert [d.text for d in docs] == ["arxiv 0", "book 0", "c4 0", "arxiv 1", "c4 1", "arxiv 2"]
    assert [d.doc_id for d in docs] == [f"redpajama:{i}" for i in range(6)]
    (call,) = load_spy
    assert call["path"] == "json" and call["streaming"] is True
    assert call["data_files"] == {"train": [str(root / "*.jsonl")]}


def test_redpajama_on_the_hub_reads_files_through_hf_urls():
    loc = hub._location(compose_cfg(["dataset=redpajama"]).dataset)
    assert loc == {"path": "json", "name": None, "revision": None, "local": False,
                   "data_files": {"train": ["hf://datasets/togethercomputer/RedPajama-Data-1T-Sample@main/*.jsonl"]}}


def test_pile_reads_the_zstd_validation_file(tmp_path, load_spy):
    root = tmp_path / "pile"
    rows = [{"text": f"pile doc {i}", "meta": {"pile_set_name": "Pile-CC"}} for i in range(5)]
    cfg = compose_cfg(["dataset=pile", f"dataset.path={root}", "dataset.max_documents=4"]).dataset
    if importlib.util.find_spec("zstandard") is None:
        root.mkdir()
        with pytest.raises(ConfigError, match=r"zstandard package is missing\. Fix: pip install zstandard"):
            load_documents(cfg)
        assert load_spy == []
        return
    import zstandard

    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    root.mkdir()
    (root / "val.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    docs = load_documents(cfg)
    assert [(d.doc_id, d.text) for d in docs] == [(f"pile:{i}", f"pile doc {i}") for i in range(4)]
    assert load_spy[0]["split"] == "validation"


def test_missing_text_field_is_one_line(tmp_path, load_spy):
    root = _c4_mirror(tmp_path / "c4")
    with pytest.raises(ConfigError, match=r"no field 'content' \(fields: \['text', 'timestamp', 'url'\]\)") as info:
        load_documents(compose_cfg(["dataset=c4", f"dataset.path={root}", "dataset.text_field=content"]).dataset)
    assert "\n" not in str(info.value)


def test_documents_are_cached_and_local_edits_invalidate(tmp_path, load_spy):
    root = _c4_mirror(tmp_path / "c4")
    cfg = compose_cfg(["dataset=c4", f"dataset.path={root}", "dataset.max_documents=5"]).dataset
    first = load_documents(cfg)
    assert load_documents(cfg) == first and len(load_spy) == 1  # second read: from the cache
    _jsonl(root / "en" / "c4-train.00000-of-01024.json.gz", [{"text": "changed", "timestamp": "", "url": ""}], gzip.open)
    assert [d.text for d in load_documents(cfg)] == ["changed"] and len(load_spy) == 2


# ------------------------------------------------------------------------------------------------
# C01: legacy names refused at validation, before anything loads

LEGACY = [
    (["dataset=c4", "dataset.path=allenai--c4"], "dataset.path='allenai--c4'", "dataset.path=allenai/c4 dataset.hf_name=en"),
    (["dataset=c4", "dataset.hf_name=allenai--c4"], "dataset.hf_name='allenai--c4'", "dataset.hf_name=en"),
    (["dataset=c4", "dataset.path=datasets--allenai--c4"], "dataset.path='datasets--allenai--c4'", "dataset.path=allenai/c4"),
    (["dataset=refinedweb", "dataset.path=tiiuae--falcon-refinedweb"], "'tiiuae--falcon-refinedweb'", "dataset.path=tiiuae/falcon-refinedweb"),
    (["dataset=c4", "dataset.path=c4"], "dataset.path='c4'", "dataset.path=allenai/c4 dataset.hf_name=en"),
    (["dataset=wikipedia", "dataset.path=wikipedia", "dataset.hf_name=20220301.en"], "dataset.path='wikipedia'", "wikimedia/wikipedia"),
    (["dataset=wikipedia", "dataset.hf_name=20220301.en"], "dataset.hf_name='20220301.en'", "dataset.hf_name=20231101.en"),
    (["dataset=wikitext", "dataset.path=wikitext"], "dataset.path='wikitext'", "dataset.path=Salesforce/wikitext"),
    (["dataset=wikitext", "dataset.path=ptb_text_only", "dataset.hf_name=penn_treebank"], "dataset.path='ptb_text_only'", "Fix:"),
    (["dataset=cnn_dailymail", "dataset.path=cnn_dailymail"], "dataset.path='cnn_dailymail'", "dataset.path=abisee/cnn_dailymail"),
    (["dataset=pile", "dataset.path=EleutherAI/pile"], "dataset.path='EleutherAI/pile'", "dataset.path=monology/pile-uncopyrighted"),
    (["dataset=pile", "dataset.path=the_pile"], "dataset.path='the_pile'", "dataset.path=monology/pile-uncopyrighted"),
    (["dataset=wikipedia", "dataset.path=legacy-datasets/wikipedia"], "'legacy-datasets/wikipedia'", "wikimedia/wikipedia"),
    (["dataset=redpajama", "dataset.builder=null"], "'togethercomputer/RedPajama-Data-1T-Sample'", "dataset.builder=json"),
    (["dataset=c4", "+dataset.trust_remote_code=true"], "dataset.trust_remote_code=true", "Fix:"),
    (["dataset=c4", "dataset.hf_name=realnewslike"], "dataset.hf_name='realnewslike'", "paths under realnewslike/"),
    (["dataset=c4", "dataset.path=/no/such/c4_mirror"], "dataset.path='/no/such/c4_mirror' is neither", "Fix: point"),
    (["dataset=c4", "dataset.path=null"], "dataset.path is missing", "dataset.path=<org>/<name>"),
    (["dataset=c4", "dataset.text_field=null"], "dataset.text_field is missing", "dataset.text_field=text"),
    (["dataset=c4", "dataset.split=''"], "dataset.split is missing", "dataset.split=train"),
    (["dataset=c4", "dataset.max_documents=0"], "dataset.max_documents=0", "e.g. 20000"),
    (["dataset=c4", "dataset.split='train[:100]'"], "dataset.split='train[:100]'", "dataset.max_documents=N"),
]


@pytest.mark.parametrize("overrides,named,fix", LEGACY, ids=[" ".join(o[1:]) for o, _, _ in LEGACY])
def test_legacy_and_missing_fields_fail_at_validation(overrides, named, fix, monkeypatch, isolated_cache):
    import datasets

    def no_loading(*args, **kwargs):
        raise AssertionError("load_dataset must not be called")

    monkeypatch.setattr(datasets, "load_dataset", no_loading)
    monkeypatch.setattr(hub, "_probe", no_loading)
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as info:
        validate_source(cfg.dataset)
    message = str(info.value)
    assert named in message and fix in message and "Fix:" in message and "\n" not in message
    with pytest.raises(ConfigError):  # load_documents validates first: nothing is read
        load_documents(cfg.dataset)


@pytest.mark.parametrize("path", ["allenai/c4", "HuggingFaceFW/fineweb-edu", "EleutherAI/the_pile_deduplicated", "json"])
def test_current_repo_ids_are_accepted(path):
    validate_source(compose_cfg(["dataset=refinedweb", f"dataset.path={path}"]).dataset)


def test_local_folder_named_like_a_legacy_name_is_accepted(tmp_path, load_spy):
    root = _c4_mirror(tmp_path / "datasets--allenai--c4")
    cfg = compose_cfg(["dataset=c4", f"dataset.path={root}", "dataset.max_documents=2"])
    validate_source(cfg.dataset)
    assert [d.text for d in load_documents(cfg.dataset)] == ["c4 shard 0 document 0.", "c4 shard 0 document 1."]


# ------------------------------------------------------------------------------------------------
# Offline mode


def test_offline_env_fails_in_one_line_listing_offline_sources(monkeypatch, isolated_cache):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called offline"))
    with pytest.raises(ConfigError) as info:
        load_documents(compose_cfg(["dataset=c4"]).dataset)
    message = str(info.value)
    assert message.startswith("offline mode (HF_HUB_OFFLINE=1): dataset 'c4' reads 'allenai/c4'")
    assert "dataset=offline_wikipedia" in message and "dataset=local_jsonl" in message
    assert "dataset=c4" not in message and "dataset=wikitext" not in message and "\n" not in message
    assert set(hub.offline_sources()) >= {"offline_wikipedia", "local_jsonl"}
    assert not set(hub.offline_sources()) & set(HUB_CONFIGS)


def test_unreachable_hub_fails_in_one_line(monkeypatch, isolated_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_probe", lambda host, port, timeout: "gaierror: [Errno -2] Name or service not known")
    with pytest.raises(ConfigError, match=r"^offline mode \(huggingface\.co:443 unreachable, gaierror.*dataset=offline_wikipedia"):
        load_documents(compose_cfg(["dataset=wikipedia"]).dataset)


def test_connection_error_during_load_is_reported_as_offline(monkeypatch, isolated_cache):
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_probe", lambda host, port, timeout: None)

    def refuse(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(ConfigError, match=r"^offline mode \(ConnectionError: Couldn't reach 'allenai/c4'.*offline_wikipedia"):
        load_documents(compose_cfg(["dataset=c4"]).dataset)


def test_local_folder_needs_no_hub_even_offline(tmp_path, monkeypatch, load_spy):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_probe", lambda *a: pytest.fail("probed the Hub for a local source"))
    root = _c4_mirror(tmp_path / "c4")
    assert len(load_documents(compose_cfg(["dataset=c4", f"dataset.path={root}"]).dataset)) == 30


# ------------------------------------------------------------------------------------------------
# Every Hub config composes


def test_all_paper_sources_have_hub_configs():
    assert set(HUB_CONFIGS) >= {"c4", "cnn_dailymail", "redpajama", "refinedweb", "wikipedia", "wikitext", "pile"}


@pytest.mark.parametrize("name", HUB_CONFIGS)
def test_hub_config_composes_and_validates(name):
    ds = compose_cfg([f"dataset={name}"]).dataset
    validate_source(ds)
    assert ds.name == name and ds.loader == "hub"
    assert ds.heldout_fraction == 0.1 and ds.permutation_seed == 0
    for field in ("path", "split", "text_field", "data_files"):
        assert ds.get(field), field
    assert "/" in ds.path  # a namespaced repo id
    assert ds.streaming is (name != "wikitext")
    assert ds.max_documents == (None if name == "wikitext" else 2000 if name.startswith("ultrachat") else 20000)
