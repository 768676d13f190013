"""Evaluation: zero-shot classification, image-text retrieval, linear probe and k-NN."""
from .caption_retrieval import (RetrievalSplit, caption_retrieval_evaluate, load_retrieval_split,
                                multi_caption_recall, read_annotations, read_karpathy)
from .captioning import caption_metrics
from .probe import knn, linear_probe, run_probe
from .retrieval import recall_at_k, retrieval_evaluate
from .zero_shot import zero_shot_classifier, zero_shot_evaluate

__all__ = ["caption_metrics", "RetrievalSplit", "caption_retrieval_evaluate", "load_retrieval_split", "multi_caption_recall",
           "read_annotations", "read_karpathy", "knn", "linear_probe", "run_probe", "zero_shot_classifier", "zero_shot_evaluate", "recall_at_k", "retrieval_evaluate"]
