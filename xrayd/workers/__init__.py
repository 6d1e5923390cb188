"""Threads that take work from the database: analysis, retraining, retention."""
