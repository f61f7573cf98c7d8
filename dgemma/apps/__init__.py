"""Applications built on the API: task workflows the CLI exposes (train, evaluate, solve)."""
