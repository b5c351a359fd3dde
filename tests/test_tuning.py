"""Tuning touches only the validation split and writes a config the evaluator reads back."""

from __future__ import annotations

import numpy as np
import polars as pl

from fusionrec.evaluation import tuning
from fusionrec.evaluation.model_config import read_model_params


class _Spy:
    seen_rows: list[int] = []


def tiny_dataset():
    from fusionrec.data.synthetic import ShopConfig, generate_shop

    shop = generate_shop(ShopConfig(n_users=200, n_items=150, n_events=15_000, seed=2))

    class DS:
        name, format, checksum = "tiny", "fusionrec", "x"
        events = shop.events.with_row_index("seq").with_columns(pl.lit(None, dtype=pl.Utf8).alias("split"))
        items = shop.items
        users = None
        has_timestamps = True
    return DS()


def test_tune_fits_on_validation_only_and_writes_config(tmp_path, monkeypatch):
    ds = tiny_dataset()
    fitted_sizes = []
    original = tuning._score

    def spy(split, name, params, metric, base):
        fitted_sizes.append(split.train.events.height)
        return original(split, name, params, metric, base)

    monkeypatch.setattr(tuning, "_score", spy)
    res = tuning.tune(ds, "temporal", "itemknn", trials=3, test_days=7)
    full_split = next(iter(tuning.make_splits(ds, "temporal", test_days=7)))
    # every trial trained on the validation split's training part: strictly less than the outer train
    assert fitted_sizes and max(fitted_sizes) < full_split.train.events.height
    assert res.best_value >= res.baseline_value
    path = tmp_path / "cfg.toml"
    tuning.write_params(path, res, "note")
    params = read_model_params(path)
    assert params["itemknn"] == {k: v for k, v in res.best_params.items() if v is not None}


def test_written_params_keep_the_other_tables_and_the_header(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('# Shop X, tuned on validation.\n# Second line.\n\n[pipeline]\ngenerators = ["itemknn"]\n\n'
                    '[pipeline.ranker]\nlearning_rate = 0.02\n\n[models.itemknn]\nk = 7\n\n[notes]\nitemknn = "old"\n')
    res = tuning.TuneResult(model="pop", metric="ndcg@20", best_value=0.1, baseline_value=0.05,
                            best_params={"category_mix": 0.5, "half_life_days": None})
    tuning.write_params(path, res, "new")
    text = path.read_text()
    assert text.startswith("# Shop X, tuned on validation.\n# Second line.\n")
    params = read_model_params(path)
    assert params["fusion"]["ranker"] == {"learning_rate": 0.02}
    assert params["pop"] == {"category_mix": 0.5} and params["itemknn"]["k"] == 7


def test_pipeline_takes_tuned_generator_params(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[pipeline]\ngenerators = ["itemknn", "pop"]\nn_candidates = 30\n\n[models.itemknn]\nk = 7\n')
    params = read_model_params(path)
    assert params["fusion"]["generators"] == {"itemknn": {"k": 7}, "pop": {}}
    assert params["blend"]["n_candidates"] == 30
    assert np.isclose(params["itemknn"]["k"], 7)
