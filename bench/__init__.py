"""codefusion.bench: latency, parity and quality benchmarks (never imported by the engine)."""
