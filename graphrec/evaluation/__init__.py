"""Evaluation: full-ranking top-K metrics and rating errors, one evaluator for every model."""

from graphrec.evaluation.evaluator import (EvalConfig, evaluate, evaluate_ranking, evaluate_rating,
                                           merge_csr, topk_excluding)
from graphrec.evaluation.metrics import RANKING_METRICS, RATING_METRICS

__all__ = ["EvalConfig", "evaluate", "evaluate_ranking", "evaluate_rating", "merge_csr", "topk_excluding",
           "RANKING_METRICS", "RATING_METRICS"]
