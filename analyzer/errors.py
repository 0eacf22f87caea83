"""Errors that mean the user's input is wrong (reported as one line, exit code 2)."""


class AnalyzerInputError(ValueError):
    """A variant, mode, workload or profile the analyzer cannot accept."""
