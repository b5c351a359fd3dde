"""The SparkSession of the batch pipeline: loopback-bound locally, UTC, sized for the driver.

On a cluster, `spark-submit` supplies the master and memory settings; what is set here only fills
in what the submitter left out (see docs/scale.md).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from fusionrec.errors import FusionrecError

__all__ = ["SparkSettings", "spark_session", "spark_available"]


@dataclass(frozen=True)
class SparkSettings:
    """Master URL and the few settings the pipeline depends on; `conf` adds any other Spark setting."""

    master: str = "local[*]"
    app_name: str = "fusionrec-train"
    driver_memory: str = "2g"
    #: partitions of every shuffle; None: 2 x the default parallelism, at least 8
    shuffle_partitions: int | None = None
    conf: dict[str, Any] = field(default_factory=dict)


def spark_available() -> bool:
    """Whether pyspark (the `[spark]` extra) can be imported."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return True


def spark_session(settings: SparkSettings | None = None) -> Any:
    """A SparkSession for `settings` (an active one is reused, with the SQL settings applied)."""
    s = settings or SparkSettings()
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise FusionrecError("--engine spark needs pyspark: pip install 'fusionrec[spark]' (pyspark==4.3.0)") from None
    if s.master.startswith("local"):
        # otherwise Spark binds the first non-loopback address, which a sandbox or laptop may lack
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # the Python workers (item-kNN and RP3beta blocks) run this interpreter, with its numpy and scipy
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(s.master).appName(s.app_name)
               .config("spark.driver.memory", s.driver_memory)
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.adaptive.enabled", "true"))
    if s.master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
    for key, value in s.conf.items():
        builder = builder.config(key, str(value))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # JVM missing, port clash: one line the user can act on
        raise FusionrecError(f"cannot start Spark at {s.master} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             "Java 17+ must be on PATH or JAVA_HOME") from None
    spark.sparkContext.setLogLevel("ERROR")
    if "spark.sql.shuffle.partitions" not in s.conf:  # a partition count the caller gave wins
        parts = s.shuffle_partitions or max(8, 2 * spark.sparkContext.defaultParallelism)
        spark.conf.set("spark.sql.shuffle.partitions", str(parts))
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return spark
