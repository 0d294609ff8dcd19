"""Model names, the offline default model, and loading."""
