"""Offline evaluation: protocols (given, temporal, leave-last-out, k-fold), metrics, statistics, reports."""

from fusionrec.evaluation.evaluator import EvalResult, ModelResult, evaluate, evaluate_splits
from fusionrec.evaluation.splits import (
    PROTOCOLS, EvaluationError, Split, given_split, kfold_splits, leave_last_out_split, make_splits, temporal_split,
)

__all__ = [
    "EvalResult", "ModelResult", "evaluate", "evaluate_splits", "EvaluationError", "Split", "PROTOCOLS",
    "given_split", "temporal_split", "leave_last_out_split", "kfold_splits", "make_splits",
]
