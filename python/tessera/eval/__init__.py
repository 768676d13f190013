"""Evaluation: zero-shot classification and image-text retrieval."""
from .retrieval import recall_at_k, retrieval_evaluate
from .zero_shot import zero_shot_classifier, zero_shot_evaluate

__all__ = ["zero_shot_classifier", "zero_shot_evaluate", "recall_at_k", "retrieval_evaluate"]
