"""The SQL files of gpt2sql, shipped as package data (read with importlib.resources)."""
