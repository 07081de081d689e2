"""LLM agents: the contract, an OpenAI-compatible streaming agent, echo, and fallback."""
