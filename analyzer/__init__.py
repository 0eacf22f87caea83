"""Analytic model of DeepSeek-OCR and DeepSeek-OCR-2 from the real architecture (meta device, no weights)."""

__version__ = "0.1.0"
