"""Workload defaults, defined once and read by Workload, profile files, the command line and scenario files.

A module of its own, free of torch, so that the command line's help can name them without loading the model code.
"""

# The defaults of every way to describe a workload (profile files, command-line options, scenario files):
# an A4 page scanned at 200 dpi, the document-to-markdown prompt's text tokens (BOS, "\n", <|grounding|> and the
# six word pieces of "Convert the document to markdown." in the DeepSeek-V2 tokenizer), 512 new tokens, batch 1.
DEFAULT_PAGE_WIDTH_PX = 1654
DEFAULT_PAGE_HEIGHT_PX = 2339
DEFAULT_PROMPT_TEXT_TOKENS = 9
DEFAULT_NEW_TOKENS = 512
DEFAULT_BATCH = 1
