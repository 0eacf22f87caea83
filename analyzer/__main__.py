"""`python -m analyzer --mode analytic --model deepseek-ai/DeepSeek-OCR --device cpu --workload-profile-id ...`"""

from registry.interfaces.analyzer_main import main

if __name__ == "__main__":
    main()
