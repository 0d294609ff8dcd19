"""Measuring one system: benchmarks, generation, teacher forcing, pure metrics, attacks, the
`unlearn eval` orchestrator (harness.py) and its tables; see docs/architecture.md."""
