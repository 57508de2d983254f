"""A real app on a stand-in instance, started without the pipe: the users' Node.js service, as a
machine image or an earlier deploy would have left it running.

The tests of the rollout's mechanics (batches, alarms, the lock, refusals) need every instance to
serve real HTTP before the pipe runs, and commands that take the app down for a moment the way a
restart does. ``install`` copies the fixture app (``test/fixtures/web-api``) to ``/opt/lb-app`` on
the instance with a control script, ``APP_CTL``:

* ``APP_CTL start``: start ``node server.js`` (the pinned Node.js 20) on ``0.0.0.0:3000`` in the
  background and wait until it answers ``/health`` (at most 30 s);
* ``APP_CTL stop``: SIGTERM, then wait until the process is gone: the app finishes what is in
  flight and exits, and from then on the instance refuses connections on the port. Gone means
  exited, reaped or not: the app started by an earlier invocation is an orphan whose parent is this
  machine's PID 1, and a container's init may reap it seconds later (this machine's every ~2 s),
  where an EC2 instance's systemd reaps at once; ``kill -0`` alone would wait for that reap;
* ``APP_CTL restart``: stop, one second down, start (``RESTART``): what a plain restart costs.

Deploys that use pm2 as the README says install the app as a release instead (``app_fixture.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from app_fixture import FIXTURE_DIR

from standin import tools

APP_DIR = "/opt/lb-app"
APP_CTL = f"{APP_DIR}/ctl"
RESTART = f"{APP_CTL} restart"  # the app is down for about a second
PORT = 3000

CTL = f"""#!/bin/bash
# start | stop | restart the instance's web-api outside pm2 (written by the ssm-deploy stand-in)
set -u
cd {APP_DIR}
start() {{
  if [ -s pid ] && kill -0 "$(cat pid)" 2>/dev/null; then return 0; fi
  PORT={PORT} setsid {tools.NODE} server.js >>app.log 2>&1 </dev/null &
  echo $! > pid
  for _ in $(seq 300); do
    curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:{PORT}/health && return 0
    kill -0 "$(cat pid)" 2>/dev/null || {{ echo "web-api did not start: $(tail -n 3 app.log)" >&2; return 1; }}
    sleep 0.1
  done
  echo "web-api does not answer on port {PORT} after 30 s" >&2
  return 1
}}
running() {{  # an exited app not yet reaped (a zombie) has stopped: kill -0 would still find it
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1)" != Z ]
}}
stop() {{
  [ -s pid ] || return 0
  pid=$(cat pid)
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 300); do running "$pid" || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  rm -f pid
}}
case "${{1:-}}" in
  start) start ;;
  stop) stop ;;
  restart) stop; sleep 1; start ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
"""


def install(app_dir: Path, release: str) -> None:
    """Put the app (answering ``release``) and its control script into ``app_dir``, the instance's
    ``/opt/lb-app`` as seen from this machine."""
    app_dir.mkdir(parents=True, exist_ok=True)
    for name in ("server.js", "package.json"):
        shutil.copyfile(FIXTURE_DIR / name, app_dir / name)
    (app_dir / "release.txt").write_text(release + "\n")
    control = app_dir / "ctl"
    control.write_text(CTL)
    control.chmod(0o755)
