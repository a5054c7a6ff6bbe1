"""``python -m core.bench``: the latency benchmark (kept at this path, the documented command)."""
from core.evaluation.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
