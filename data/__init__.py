"""Forget/retain data: TOFU, users' own files, and a built-in synthetic generator."""
