"""`python -m analyzer --mode analytic --model deepseek-ai/DeepSeek-OCR --device cpu --workload-profile-id ...`"""

from registry.cli import analyzer_entry

if __name__ == "__main__":
    analyzer_entry()
