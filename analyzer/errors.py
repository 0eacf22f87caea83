"""Errors that mean the user's input is wrong (reported as one line, exit code 2)."""

from analyzer.fileio import one_line


class OneLineError(Exception):
    """An error whose message is one line of at most MESSAGE_CHARS characters however much input it quotes."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class AnalyzerInputError(OneLineError, ValueError):
    """A variant, mode, workload or profile the analyzer cannot accept."""


class ReportFormatError(OneLineError, ValueError):
    """A report file or mapping that is not a valid AnalyticModelReport (analyzer.report; here so that the command
    line's error handling names it without loading the report's code)."""
