"""items.npz per-item records: building from lm-eval samples, round trip, dtypes (issue 27 item 4)."""
import numpy as np
import pytest

from calib_sweep.evaluation.items import ItemRecords, load_item_records, records_from_samples, save_item_records


def _samples():
    # lm-eval multiple-choice samples: filtered_resps = one (loglik, is_greedy) per choice; given out of order
    return [
        {"doc_id": 3, "target": 1, "filtered_resps": [(-2.0, False), (-1.5, True), (-3.0, False)], "acc": 1.0, "acc_norm": 0.0},
        {"doc_id": 0, "target": 0, "filtered_resps": [(-4.0, False), (-1.0, False)], "acc": 0.0, "acc_norm": 1.0},
    ]


def test_records_from_samples_values():
    rec = records_from_samples(_samples())
    assert rec.doc_id.tolist() == [0, 3] and rec.doc_id.dtype == np.int64
    assert rec.target.tolist() == [0, 1] and rec.target.dtype == np.int16
    assert rec.pred.tolist() == [1, 1] and rec.pred.dtype == np.int16
    assert rec.correct.tolist() == [0, 1] and rec.correct.dtype == np.uint8
    assert rec.correct_norm.tolist() == [1, 0]
    assert rec.choice_offsets.tolist() == [0, 2, 5]
    np.testing.assert_array_equal(rec.loglik, np.array([-4.0, -1.0, -2.0, -1.5, -3.0], dtype=np.float32))
    assert rec.is_greedy.tolist() == [False, False, False, True, False]
    np.testing.assert_array_equal(rec.choices(1), np.array([-2.0, -1.5, -3.0], dtype=np.float32))


def test_round_trip_and_no_norm(tmp_path):
    lambada = records_from_samples([{"doc_id": 7, "target": " word", "filtered_resps": [(-0.5, True)], "acc": 1.0}])
    assert lambada.correct_norm is None and lambada.target.tolist() == [0]
    save_item_records(tmp_path, {"arc_easy": records_from_samples(_samples()), "lambada_openai": lambada})
    back = load_item_records(tmp_path)
    assert sorted(back) == ["arc_easy", "lambada_openai"]
    assert back["lambada_openai"].correct_norm is None and back["lambada_openai"].is_greedy.tolist() == [True]
    assert back["arc_easy"].choice_offsets.tolist() == [0, 2, 5] and back["arc_easy"].loglik.dtype == np.float32


def test_missing_and_duplicates(tmp_path):
    with pytest.raises(FileNotFoundError, match="items.npz"):
        load_item_records(tmp_path)
    with pytest.raises(ValueError, match="duplicate doc_id"):
        records_from_samples(_samples() + _samples())


def test_evaluate_model_fills_records_that_agree_with_metrics(tiny_model_dir, tmp_path):
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calib_sweep.evaluation import evaluate_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = OmegaConf.create({"perplexity": {"seq_len": 16, "max_windows": 1, "batch_size": 1},
                            "zeroshot": {"tasks": ["piqa", "rte"], "limit": 4, "batch_size": 4}})
    records: dict = {}
    metrics, _ = evaluate_model(model, tokenizer, cfg, {}, item_records=records)
    assert sorted(records) == ["piqa", "rte"]
    piqa, rte = records["piqa"], records["rte"]
    assert piqa.doc_id.tolist() == [0, 1, 2, 3] and piqa.choice_offsets.tolist() == [0, 2, 4, 6, 8]
    assert rte.correct_norm is None and piqa.correct_norm is not None
    assert piqa.correct.mean() == pytest.approx(metrics["zeroshot/piqa/acc"])
    assert piqa.correct_norm.mean() == pytest.approx(metrics["zeroshot/piqa/acc_norm"])
    assert rte.correct.mean() == pytest.approx(metrics["zeroshot/rte/acc"])
    assert ((piqa.pred == piqa.target) == piqa.correct.astype(bool)).all()  # acc is argmax of raw loglik
    save_item_records(tmp_path, records)
    assert load_item_records(tmp_path)["piqa"].loglik.tolist() == piqa.loglik.tolist()
