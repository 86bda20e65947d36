"""Evaluation: cross-modal retrieval metrics, the ADVANCE probe, embedding folders, run reports."""
