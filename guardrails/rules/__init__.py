"""The gate's rules: plain functions ``(ctx) -> Iterator[Finding]`` registered in ``guardrails.registry``."""
