"""Evaluation the way the CodeFusion paper measures: metrics per language and ``codefusion eval``."""
