"""Training, evaluation, inference and prediction."""
