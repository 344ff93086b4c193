"""Calibration sets: disjoint seeded draws, manifests, and the cases in shared/cases (C02-C04, C07, C08)."""

from __future__ import annotations

import random
import time

import pytest
import torch

from calib_sweep.data import Document, draw_calibration_set, split_documents, token_hash, validate_samples
from calib_sweep.errors import ConfigError
from conftest import make_text


def docs_of(lengths: list[int], seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    return [Document(f"d{i}", make_text(rng, n)) for i, n in enumerate(lengths)]


def token_spans(calib) -> set[tuple[str, int]]:
    """Every (doc_id, token offset) a calibration set uses."""
    return {
        (p["doc_id"], t) for seq in calib.sequences for p in seq["pieces"] for t in range(p["start"], p["end"])
    }


def test_seeds_give_pairwise_disjoint_sets_c08(word_tokenizer):
    docs = docs_of([900] * 40)
    sets = [draw_calibration_set(docs, word_tokenizer, 8, 128, seed, "src") for seed in range(10)]
    spans = [token_spans(s) for s in sets]
    for i in range(10):
        assert len(spans[i]) == 8 * 128  # no token counted twice inside one set
        for j in range(i + 1, 10):
            assert not spans[i] & spans[j], f"seeds {i} and {j} share tokens"
    slots = [{seq["slot"] for seq in s.sequences} for s in sets]
    assert len(set().union(*slots)) == 80
    # The manifest's hash is the hash of the ids, and every manifest is JSON-ready.
    assert sets[3].manifest()["token_sha256"] == token_hash(sets[3].input_ids)
    assert len(sets[3].manifest()["sequences"]) == 8


def test_draw_is_deterministic_and_manifest_rebuilds_tokens(word_tokenizer):
    docs = docs_of([500] * 10)
    a = draw_calibration_set(docs, word_tokenizer, 4, 64, 2, "src")
    b = draw_calibration_set(docs, word_tokenizer, 4, 64, 2, "src")
    assert torch.equal(a.input_ids, b.input_ids) and a.token_sha256 == b.token_sha256
    other = draw_calibration_set(docs, word_tokenizer, 4, 64, 3, "src")
    assert other.token_sha256 != a.token_sha256
    # Rebuild each row from the manifest's (doc_id, start, end) pieces.
    by_id = {d.doc_id: word_tokenizer([d.text])["input_ids"][0] + [word_tokenizer.eos_token_id] for d in docs}
    for row, seq in zip(a.input_ids.tolist(), a.sequences):
        rebuilt = [t for p in seq["pieces"] for t in by_id[p["doc_id"]][p["start"] : p["end"]]]
        assert rebuilt == row


def test_bos_rows_start_with_bos_and_rebuild_from_the_manifest(word_tokenizer):
    docs = docs_of([500] * 10)
    sets = [draw_calibration_set(docs, word_tokenizer, 4, 64, seed, "src", bos_token_id=99) for seed in range(3)]
    a = sets[0]
    assert a.input_ids.shape == (4, 64) and (a.input_ids[:, 0] == 99).all()
    assert a.slots_available == 5010 // 63  # slots of seq_len - 1 stream tokens
    assert a.manifest()["bos_token_id"] == 99 and "BOS" in a.manifest()["policy"]
    by_id = {d.doc_id: word_tokenizer([d.text])["input_ids"][0] + [word_tokenizer.eos_token_id] for d in docs}
    for row, seq in zip(a.input_ids.tolist(), a.sequences):
        assert row == [99] + [t for p in seq["pieces"] for t in by_id[p["doc_id"]][p["start"] : p["end"]]]
    spans = [token_spans(s) for s in sets]
    assert all(len(sp) == 4 * 63 for sp in spans) and not (spans[0] & spans[1] or spans[1] & spans[2])
    assert draw_calibration_set(docs, word_tokenizer, 4, 64, 0, "src").manifest()["bos_token_id"] is None
    with pytest.raises(ConfigError, match="leaves no text after the BOS token"):
        draw_calibration_set(docs, word_tokenizer, 4, 1, 0, "src", bos_token_id=99)


def test_long_documents_give_windows_c02(word_tokenizer):
    # 20 documents of ~3,000 tokens: each gives several 512-token windows, nothing is dropped.
    docs = docs_of([3000] * 20)
    calib = draw_calibration_set(docs, word_tokenizer, 100, 512, 0, "long")
    manifest = calib.manifest()
    assert calib.input_ids.shape == (100, 512)
    assert manifest["n_samples"] == 100 and manifest["n_tokens"] == 51_200
    assert manifest["slots_available"] == (20 * 3001) // 512 == 117
    assert manifest["documents_used"] == 20
    assert max(p["start"] for s in calib.sequences for p in s["pieces"]) > 2000  # deep inside documents
    # 128 x 512 needs more than the 117 windows there are: a clear error with the numbers.
    with pytest.raises(ConfigError, match=r"117 non-overlapping windows of seq_len=512.*0 disjoint set"):
        draw_calibration_set(docs, word_tokenizer, 128, 512, 0, "long")
    # ... or, by the documented policy, fewer sequences, recorded as such.
    fewer = draw_calibration_set(docs, word_tokenizer, 128, 512, 0, "long", allow_fewer=True)
    assert fewer.manifest()["n_samples"] == 117 and fewer.manifest()["n_samples_requested"] == 128
    assert fewer.manifest()["n_tokens"] == 117 * 512


def test_small_source_error_says_how_many_sets_c03(word_tokenizer):
    docs = docs_of([100] * 50)  # 50 documents, 5,050 tokens with EOS
    with pytest.raises(ConfigError) as err:
        draw_calibration_set(docs, word_tokenizer, 128, 64, 0, "small")
    message = str(err.value)
    assert "78 non-overlapping windows" in message and "0 disjoint set(s) of n_samples=128" in message
    assert "Fix:" in message and "samples.allow_fewer=true to use the 78 window(s) left" in message
    # Seed 1 of 40 needs windows 40..79: only 78 exist.
    with pytest.raises(ConfigError, match="enough for 1 disjoint set") as short:
        draw_calibration_set(docs, word_tokenizer, 40, 64, 1, "small")
    # the fix names the policy that would use the 38 windows left (seed 0's 40 come first)
    assert "or samples.allow_fewer=true to use the 38 window(s) left" in str(short.value)
    fewer = draw_calibration_set(docs, word_tokenizer, 40, 64, 1, "small", allow_fewer=True)
    assert fewer.n_samples == 38
    # the shortened last set takes the windows after seed 0's 40, never seed 0's own
    first = draw_calibration_set(docs, word_tokenizer, 40, 64, 0, "small")
    assert not {s["slot"] for s in fewer.sequences} & {s["slot"] for s in first.sequences}
    assert len({s["slot"] for s in fewer.sequences} | {s["slot"] for s in first.sequences}) == 78


def test_short_documents_are_concatenated_quickly_c04(word_tokenizer):
    docs = docs_of([300] * 40)  # every document shorter than seq_len
    start = time.monotonic()
    calib = draw_calibration_set(docs, word_tokenizer, 5, 2048, 0, "short")
    assert calib.input_ids.shape == (5, 2048)
    assert all(len(seq["pieces"]) >= 7 for seq in calib.sequences)  # 2048 / 301 -> 7-8 documents each
    assert (calib.input_ids == word_tokenizer.eos_token_id).sum(dim=1).min() >= 6  # EOS separators inside
    with pytest.raises(ConfigError, match="5 non-overlapping windows"):
        draw_calibration_set(docs, word_tokenizer, 6, 2048, 0, "short")
    assert time.monotonic() - start < 5


def test_large_source_small_n_uses_exactly_n_c07(word_tokenizer):
    docs = docs_of([40] * 10_000)
    calib = draw_calibration_set(docs, word_tokenizer, 16, 128, 0, "rows")
    assert calib.input_ids.shape == (16, 128)
    assert calib.manifest()["n_samples"] == 16 and len(calib.manifest()["sequences"]) == 16


def test_heldout_split_is_disjoint_and_order_free():
    docs = docs_of([10] * 500)
    calib, held = split_documents(docs, 0.1)
    assert {d.doc_id for d in calib}.isdisjoint({d.doc_id for d in held})
    assert len(calib) + len(held) == 500 and 25 <= len(held) <= 80
    calib2, held2 = split_documents(list(reversed(docs)), 0.1)
    assert {d.doc_id for d in held2} == {d.doc_id for d in held}


@pytest.mark.parametrize(
    "n_samples, seq_len, seed, pattern",
    [(0, 64, 0, "samples.n_samples=0"), (4, -1, 0, "samples.seq_len=-1"), ("8", 64, 0, "samples.n_samples='8'"),
     (4, 64, -2, "seed=-2"), (4, 4096, 0, "max_position_embeddings=2048")],
)
def test_bad_sizes_are_named(n_samples, seq_len, seed, pattern):
    with pytest.raises(ConfigError, match=pattern.replace("(", r"\(")) as err:
        validate_samples(n_samples, seq_len, seed, max_positions=2048)
    assert "Fix:" in str(err.value)


def test_prebuilt_10000_row_dataset_gives_exactly_16_sequences_c07(tmp_path, word_tokenizer):
    import datasets

    from calib_sweep.data import build_calibration_set
    from helpers import compose_cfg

    rng = random.Random(7)
    datasets.Dataset.from_dict({"text": [make_text(rng, 30) for _ in range(10_000)]}).save_to_disk(str(tmp_path / "ds"))
    cfg = compose_cfg(["dataset=local_hf_disk", f"dataset.path={tmp_path / 'ds'}"])
    calib = build_calibration_set(cfg.dataset, word_tokenizer, n_samples=16, seq_len=128, seed=0)
    manifest = calib.manifest()
    assert calib.input_ids.shape == (16, 128)
    assert manifest["n_samples"] == 16 and manifest["n_samples_requested"] == 16 and manifest["n_tokens"] == 2048
    assert manifest["slots_available"] > 2000  # 10,000 rows x 31 tokens; only 16 windows used


@pytest.mark.parametrize("value", ["maybe", 1, None])
def test_allow_fewer_that_is_not_a_boolean_is_refused(value):
    with pytest.raises(ConfigError, match=r"samples.allow_fewer=.* must be true or false\. Fix: samples.allow_fewer=true"):
        validate_samples(4, 64, 0, allow_fewer=value)
    validate_samples(4, 64, 0, allow_fewer=True)  # a boolean passes
