"""Tasks: data, prompt formats and checkers shared by demos, training and benchmarks."""
