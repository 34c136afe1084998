"""Runners: each tool (llmcompressor, vLLM's server, lighteval, ``vllm bench``) as a subprocess.

Tools never run inside the pytest process: vLLM frees accelerator memory only when its process dies,
a hung tool must be killable by a timeout, and the tools' pins clash, so each may live in its own
interpreter (see ``quantgate.runners.toolenv``). Every run has a timeout, a captured log, and on
failure a ``ToolError`` carrying the tail of that log.
"""
