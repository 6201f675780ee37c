"""servebench: a benchmarker for LLM inference servers."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
