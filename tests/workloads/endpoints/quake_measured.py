"""The demo app (examples/quake-monitor, not a line of it changed) under uvicorn, each route handler wrapped by
handler_timer's library-style decorator so that its own CPU time is known: the truth the endpoint labels are checked
against.

    python quake_measured.py QUAKE_MONITOR_DIR PORT TOTALS.json
"""

from __future__ import annotations

import os
import sys

app_dir, port, totals = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, app_dir)
os.chdir(app_dir)

import uvicorn  # noqa: E402
from fastapi.routing import APIRoute  # noqa: E402

import handler_timer  # noqa: E402
from app import app  # noqa: E402

# FastAPI calls `route.dependant.call` for each request, and decided at startup whether to await it (the wrapper
# keeps the handler's kind), so wrapping it there times exactly the handler's call.
for route in app.routes:
    if isinstance(route, APIRoute):
        route.dependant.call = handler_timer.timed(route.dependant.call)

handler_timer.write_totals_every(totals)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
