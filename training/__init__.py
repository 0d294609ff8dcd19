"""Weight-level unlearning: losses, methods, FILA, the trainer and the run orchestration."""
