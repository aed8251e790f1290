"""``python -m bench``: run the benchmark, print the tables, write the report."""

import asyncio
import shlex
import sys

from .document import markdown
from .options import parse_args
from .report import figures_table, text_table, worker_model_table
from .run import run_benchmark

#: Other work above this many cores makes the figures unrepresentative.
BUSY_MACHINE_CORES = 0.1


def main() -> None:
    """Run with the command-line options; exit with a message if the run could not finish."""
    options = parse_args()
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    try:
        results = asyncio.run(run_benchmark(options, command))
    except RuntimeError as exc:
        sys.exit(f"bench: {exc}")
    except TimeoutError:
        sys.exit("bench: timed out (a phase, or the whole run after 20 minutes)")
    if results.background_load > BUSY_MACHINE_CORES:
        print(
            f"bench: other work kept {results.background_load:.0%} of a core busy before the run;"
            " the figures are lower than a quiet machine's",
            file=sys.stderr,
        )
    print(text_table(figures_table(results)))
    print()
    print(text_table(worker_model_table(results)))
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(markdown(results))
    print(f"\nwrote {options.output}; server logs in {results.log_dir}")


main()
