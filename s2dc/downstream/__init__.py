"""Downstream fine-tuning: a task-independent engine and one small module per task."""
