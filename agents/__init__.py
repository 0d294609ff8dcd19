"""The agent layer: an ALU-style LangGraph rewriter in front of the (guarded) vLLM server.

    config.py  AgentConfig (YAML, strict): k, j, threshold, retries and every prompt
    llm.py     the injected chat model: any OpenAI-compatible endpoint, call accounting
    store.py   the unlearning targets the front knows (a guard policy + live ones), retrieval
    nodes.py   answer / audit / erase / critic / compose as plain functions, and their parsers
    graph.py   the LangGraph graph over those nodes; `Pipeline.run()` rewrites one request
    request.py what the front reads from a request: every text the engine renders, or a 400
    front.py   the OpenAI-compatible front (`unlearn serve --agents`) and its admin endpoint
"""
