"""Entry point: ``.venv/bin/python benchmarks/run.py [--quick]`` (or ``python -m benchmarks.run``);
``benchmarks/run.py chaos [--duration 180]`` runs the chaos run (``benchmarks/chaos.py``).

Run as a script, Python puts ``benchmarks/`` rather than the repository on ``sys.path``; the
repository root is added so the ``benchmarks`` package (and the simulator child it starts with
``python -m benchmarks.sim_server``) import the same way in both forms.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    if sys.argv[1:2] == ["chaos"]:
        from benchmarks.chaos import main as chaos_main

        return chaos_main(sys.argv[2:])
    from benchmarks.bench import main as bench_main

    return bench_main()


if __name__ == "__main__":
    sys.exit(main())
