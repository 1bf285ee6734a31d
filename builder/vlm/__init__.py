"""A reusable OpenAI-compatible VLM client (concurrency, rate limits, retries, budget) and its response cache."""

from builder.vlm.cache import ResponseCache, cache_key
from builder.vlm.client import (Budget, Completion, Failure, Price, StageStats, Usage, VLMClient, VLMSettings,
                                estimate_prompt_tokens, parse_json_answer, request_params)

__all__ = ["Budget", "Completion", "Failure", "Price", "ResponseCache", "StageStats", "Usage", "VLMClient",
           "VLMSettings", "cache_key", "estimate_prompt_tokens", "parse_json_answer", "request_params"]
