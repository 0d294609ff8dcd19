"""unlearnkit: LLM unlearning, weight-level (training/) and at inference time (guard/, agents/).

Subpackages import their heavy dependencies lazily, so `import unlearnkit` and
`unlearn --help` stay instant."""

__version__ = "0.1.0"
