"""Triggers run in the triggerer process: importable from the installed package."""
