"""One tiny synthetic shop, event store and model version shared by the serving tests (built once per run).

Each test module takes a private copy of the store and the model directory, so their writes never meet.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop
from fusionrec.pipeline import PipelineConfig
from fusionrec.serving.training import train_version
from fusionrec.store.event_store import EventStore

GENERATORS = {"pop": {}, "itemknn": {}, "covisit": {}, "als": {"factors": 16, "iterations": 5}}
# one LightGBM thread: two spin-waiting OpenMP threads on a busy 2-core machine turn 0.3 s into minutes
# the ranker is kept although a shop this small cannot make its gain significant: the tests read its model file
CONFIG = PipelineConfig(generators=GENERATORS, n_candidates=40, seed=1, ranker={"n_estimators": 50, "num_threads": 1},
                        ranker_guard=False)
BLEND_TOML = """
[pipeline]
fuser = "blend"
n_candidates = 40
seed = 1
[generators.pop]
[generators.itemknn]
[generators.covisit]
[generators.als]
factors = 16
iterations = 5
"""


@functools.lru_cache(maxsize=1)
def built() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fusionrec-serving-"))
    atexit.register(shutil.rmtree, root, True)
    shop = generate_shop(ShopConfig(n_users=300, n_items=200, n_events=20_000, seed=1))
    write_shop(shop, root / "shop")
    with EventStore(root / "store.duckdb") as st:
        st.ingest([root / "shop"], "fusionrec")
        train_version(st, root / "model", CONFIG)
    return root


def fresh_copy(dest: Path) -> tuple[Path, Path]:
    """(store file, model directory): a private copy under `dest`."""
    root = built()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "store.duckdb", dest / "store.duckdb")
    shutil.copytree(root / "model", dest / "model")
    return dest / "store.duckdb", dest / "model"


def shop_folder() -> Path:
    return built() / "shop"
