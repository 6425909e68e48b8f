"""The experiments: scripts run as ``python -m benchmarks.<script>``, one folder per question with its
``config.toml`` and results, and one runner (``python -m benchmarks``, :mod:`benchmarks.lib`)."""
