"""Plots of runs and evaluations."""
from .plots import (plot_confusion, plot_eval_curves, plot_prediction_grid, plot_reconstructions, plot_training_curves,
                    read_metrics)

__all__ = ["plot_training_curves", "plot_eval_curves", "plot_confusion", "plot_prediction_grid", "plot_reconstructions",
           "read_metrics"]
