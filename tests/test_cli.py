"""The command line as a user meets it: the demo flow, JSON output, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fusionrec.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop")
    res = runner.invoke(app, ["generate", "--out", str(out / "shop"), "--users", "300", "--items", "200",
                              "--events", "20000", "--seed", "1", "--json"])
    assert res.exit_code == 0, res.output
    return out


def test_generate_ingest_stats_json(shop):
    store = shop / "s.duckdb"
    res = runner.invoke(app, ["ingest", "--store", str(store), "--format", "fusionrec", str(shop / "shop"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    t = rep["total"]
    assert t["rows_in"] == 20000 and t["rows_in"] == t["accepted"] + t["rejected"] + t["duplicates"]
    res = runner.invoke(app, ["stats", "--store", str(store), "--json"])
    stats = json.loads(res.stdout)
    assert stats["events"] == t["accepted"] and stats["catalogue_items"] == 200
    assert set(stats["behaviors"]) <= {"view", "fav", "cart", "buy"}


def test_evaluate_writes_contract_json_and_recs(shop, tmp_path):
    out, recs = tmp_path / "e.json", tmp_path / "r.csv"
    res = runner.invoke(app, ["evaluate", "--data", str(shop / "shop"), "--format", "fusionrec", "--protocol", "temporal",
                              "--test-days", "7", "--models", "pop,itemknn", "--k", "5,10", "--output", str(out),
                              "--save-recs", str(recs)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["k"] == [5, 10] and set(doc["models"]) == {"pop", "itemknn"}
    assert "recall@10" in doc["models"]["itemknn"]["metrics"] and doc["exclude_seen"] is True
    assert recs.read_text().splitlines()[0] == "model,user_id,rank,item_id,score"


@pytest.mark.parametrize("args,needle", [
    (["ingest", "--store", "{tmp}/s.duckdb", "--format", "nope", "{tmp}"], "unknown format"),
    (["ingest", "--store", "{tmp}/s.duckdb", "--format", "fusionrec", "{tmp}/missing.csv"], "no such file"),
    (["stats", "--store", "{tmp}/absent.duckdb"], "no such store"),
    (["evaluate", "--data", "{tmp}", "--format", "fusionrec", "--protocol", "temporal"], "test-days"),
    (["evaluate", "--data", "{shop}", "--format", "fusionrec", "--protocol", "sideways", "--models", "pop"], "protocol"),
    (["evaluate", "--data", "{shop}", "--format", "fusionrec", "--protocol", "given", "--models", "pop", "--k", "x"], "--k"),
    (["evaluate", "--data", "{shop}", "--format", "fusionrec", "--protocol", "temporal", "--test-days", "7",
      "--models", "magic"], "magic"),
    (["ingest", "--store", "{tmp}/s.duckdb", "--format", "fusionrec", "--since", "yesterday", "{shop}"], "--since"),
    (["train", "--engine", "spark", "--events", "{shop}", "--out", "{tmp}/m", "--spark-conf", "memory=8g"],
     "spark.* key"),
    (["train", "--store", "{tmp}/s.duckdb", "--out", "{tmp}/m", "--spark-conf", "spark.driver.memory=8g"],
     "--spark-conf goes with --engine spark"),
])
def test_user_errors_are_one_line_exit_2(shop, tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{shop}", str(shop / "shop")) for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
