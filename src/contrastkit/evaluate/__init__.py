"""Evaluation of learned features: kNN, linear and few-label probes, fine-tuning, plots."""

from __future__ import annotations

from contrastkit.evaluate.features import extract_features, flatten_pixels
from contrastkit.evaluate.few_label import few_label_probe
from contrastkit.evaluate.finetune import compare_finetune, finetune
from contrastkit.evaluate.knn import knn_evaluate, knn_predict
from contrastkit.evaluate.linear_probe import (
    fit_logistic_regression,
    linear_probe,
    predict_logistic_regression,
    standardize,
)
from contrastkit.evaluate.metrics import classification_metrics, confusion_matrix
from contrastkit.evaluate.plots import (
    plot_embedding_map,
    plot_neighbor_grid,
    plot_training_curves,
)

__all__ = [
    "classification_metrics",
    "compare_finetune",
    "confusion_matrix",
    "extract_features",
    "few_label_probe",
    "finetune",
    "fit_logistic_regression",
    "flatten_pixels",
    "knn_evaluate",
    "knn_predict",
    "linear_probe",
    "plot_embedding_map",
    "plot_neighbor_grid",
    "plot_training_curves",
    "predict_logistic_regression",
    "standardize",
]
