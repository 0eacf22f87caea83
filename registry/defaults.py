"""Defaults the command line shows in its help, kept apart from the modules that use them so that `--help`
loads no database or pricing code."""

# The DuckDB storage format a snapshot is written in unless asked otherwise: DuckDB 1.1 and every later release read
# it, which covers the DuckDB that BI drivers and older Python environments bundle.
DEFAULT_STORAGE_VERSION = "v1.1.0"

# A summary prices on the H200 under the shipped profile of the report's own execution (hf-eager or vllm) unless a
# runtime is named.
DEFAULT_SUMMARY_HARDWARE = "h200"
