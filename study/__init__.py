"""Studies: Ray Tune + Optuna searches (and exact grids) over the method's knobs, tracked in MLflow."""
