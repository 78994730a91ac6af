"""One trial of supervised mollification: data, augmentation, mollification, models, training,
evaluation. Runs without Ray; `study/` drives it, `analysis/` reads what it logged."""
