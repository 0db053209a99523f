"""Cold start: `import function_app` vs `import azure.functions` alone, in fresh interpreters,
interleaved in one run; plus the time until the first HTTP request is answered."""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 15

TIMED_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
FIRST_REQUEST = """
import asyncio, time
t = time.perf_counter()
import azure.functions as func
import function_app
fn = next(f.get_user_function() for f in function_app.app.get_functions() if f.get_function_name() == "http_app_func")
req = func.HttpRequest(method="GET", url="http://localhost/api/openapi.json", headers={}, body=b"")
resp = asyncio.run(fn(req, None))
assert resp.status_code == 200, resp.status_code
print(time.perf_counter() - t)
"""


def _seconds(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    base, app, first = [], [], []
    for _ in range(RUNS):  # interleaved so that machine noise hits both alike
        base.append(_seconds(TIMED_IMPORT.format(module="azure.functions")))
        app.append(_seconds(TIMED_IMPORT.format(module="function_app")))
        first.append(_seconds(FIRST_REQUEST))
    b, a, f = statistics.median(base), statistics.median(app), statistics.median(first)
    print(f"coldstart ({RUNS} fresh interpreters each, medians)")
    print(f"  import azure.functions          {b * 1000:7.1f} ms")
    print(f"  import function_app             {a * 1000:7.1f} ms   ratio {a / b:.2f}x (target < 1.5x)")
    print(f"  import + first HTTP request     {f * 1000:7.1f} ms   ratio {f / b:.2f}x")
