"""`python -m tools.bench`: channeld against a bare dingtalk-stream bot, at the platform's limits.

Every scenario runs real processes on loopback: the DingTalk emulator (`channeld emulate
dingtalk`), a fake OpenAI-compatible LLM (`tools.bench.llm`), channeld (`channeld run`) and, for
the baseline, a bot written the way DingTalk's own examples write one (`tools.bench.baseline_bot`).
Results go to docs/bench/ as results.json, results.md and PNG plots.
"""
