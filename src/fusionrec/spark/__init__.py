"""The batch stages on Apache Spark (`fusionrec train --engine spark`): the `[spark]` extra, pyspark 4.3.

session.py builds the SparkSession, readers.py reads event logs, validation.py applies the embedded
rules, stages.py holds the Spark jobs, assemble.py turns their compact results into the embedded
artefact's arrays and train.py orchestrates. See docs/scale.md.
"""
