"""`dgemma bench`: suites of tasks, targets, checkers, resumable runs, reports."""
