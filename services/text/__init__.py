"""Text service: portrait prompts, names without celebrities, backstories from an OpenAI-compatible LLM."""
