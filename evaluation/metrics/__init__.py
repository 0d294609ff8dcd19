"""Pure metric functions (numbers in, numbers out), one module per family, each testable alone."""
