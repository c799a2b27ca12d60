"""Revisions, oldest first (``down_revision`` links them)."""
