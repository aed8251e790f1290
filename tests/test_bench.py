"""The benchmark's smoke run: ``python -m bench --quick`` still runs end to end, so it cannot rot.

Its figures say little (small numbers, a machine busy with the suite); what is checked is that
every phase ran, the report was written with its figures, and no login was lost or duplicated.
It owns a database of its own on the test server, ``TEST_BENCH_REDIS_DB`` (default 13: the tests
use 15 and 14), which it empties; its keys and pub/sub channel are named ``bench:<db>:``, apart from
the tests' deployments.
"""

import os
import re
import subprocess
import sys

from tests.conftest import ROOT, TEST_REDIS_URL

#: The benchmark's database on the test Redis server.
BENCH_DB = os.environ.get("TEST_BENCH_REDIS_DB", "13")
#: A quick run takes about a minute; more means a phase hung.
RUN_SECONDS = 240


def test_quick_run_writes_the_report_with_no_login_lost_or_duplicated(tmp_path):
    report = tmp_path / "benchmarks.md"
    host = TEST_REDIS_URL.rsplit("/", 1)[0]
    assert host == "redis://127.0.0.1:6379", "the benchmark runs against 127.0.0.1:6379 only"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--redis-db", BENCH_DB]
        + ["--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    text = report.read_text()
    for figure in (
        "| Scan-to-push p50",
        "| Server CPU per sign-in scan",
        "| Server CPU per QR creation",
        "| OpenID provider: code exchanges",
        "| OpenID provider: userinfo",
        "| Per 1,000 browsers, polling every 1 s",
        "| Per 1,000 browsers, polling every 3 s",
        "| Floor: server CPU per bare HTTP round trip",
        "## Worker model: why gevent",
    ):
        assert figure in text, figure
    assert "| Lost logins | 0 of 50 scans (0 callbacks failed;" in text
    assert "| Duplicated logins | 0 (of " in text
    assert "; 0 failed" in text.split("| OpenID provider: code exchanges", 1)[1].split("\n", 1)[0]
    # WeChat's side ran in a server of its own, which the QR creations called.
    wechat_ms = re.search(r"the\s+emulator\s+answering\s+it\s+used\s+([\d.]+)\s+ms", text)
    assert wechat_ms and float(wechat_ms[1]) > 0
