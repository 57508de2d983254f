#!/usr/bin/env bash
# ensure-docker.sh - make sure a Docker engine (and debootstrap) is usable here.
#
# Idempotent; safe to run many times. Meant for dev machines and CI runners
# that have no systemd and possibly nothing Docker-related installed:
#   1. installs docker.io + debootstrap from the Debian mirror when missing;
#   2. starts dockerd in the background (detached, outlives this script) when
#      `docker info` fails, then waits for the engine to answer.
# Quiet on success except for one line: "docker: engine ready (version X)".
#
# Environment knobs:
#   DOCKERD_LOG          dockerd log file   (default /var/log/ssm-deploy-dockerd.log)
#   DOCKERD_WAIT_SECONDS how long to wait for the engine (default 60)
#   DOCKERD_ARGS         extra arguments for dockerd (word-split), default none
#   DOCKERD_PIDFILE      pid file to check for a running dockerd (default
#                        /var/run/docker.pid; change it only together with
#                        --pidfile in DOCKERD_ARGS)
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/ssm-deploy-dockerd.log}"
DOCKERD_WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"
DOCKERD_ARGS="${DOCKERD_ARGS:-}"
DOCKER_PIDFILE="${DOCKERD_PIDFILE:-/var/run/docker.pid}"

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { printf 'ensure-docker: ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ] && ! timeout 20 docker info >/dev/null 2>&1; then
    die "Docker engine not usable and not running as root: cannot install/start it (re-run as root)"
fi

docker_ok() {
    # `timeout` guards against a wedged daemon that accepts but never answers.
    timeout 20 docker info >/dev/null 2>&1
}

# ---------------------------------------------------------------- 1. packages
# Note: some machines ship a bare docker *client* (e.g. /usr/local/bin/docker),
# so `docker` alone being on PATH says nothing about the engine: check dockerd.
notes=""
missing=()
for cmd in docker dockerd debootstrap; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp /tmp/ensure-docker-apt.XXXXXX.log)"
    if ! { apt-get -o Acquire::Retries=3 update \
            && apt-get -o Acquire::Retries=3 \
                   -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                   install -y --no-install-recommends docker.io debootstrap; } >"$apt_log" 2>&1; then
        tail -n 40 "$apt_log" >&2 || true
        die "apt-get install of docker.io/debootstrap failed (full log: $apt_log)"
    fi
    rm -f "$apt_log"
    for cmd in docker dockerd debootstrap; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' still not on PATH after installing docker.io debootstrap"
    done
    notes="${notes}; installed docker.io debootstrap (missing: ${missing[*]})"
fi

# ---------------------------------------------------------------- 2. engine
if ! docker_ok; then
    running_pid=""
    if [ -s "$DOCKER_PIDFILE" ]; then
        pid="$(cat "$DOCKER_PIDFILE" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
           && grep -qa dockerd "/proc/$pid/cmdline" 2>/dev/null; then
            running_pid="$pid"
        else
            # Left behind by a dockerd that was killed (e.g. end of a previous session).
            rm -f "$DOCKER_PIDFILE"
        fi
    fi

    started_pid=""
    if [ -n "$running_pid" ]; then
        log "dockerd already running (pid $running_pid) but not answering yet; waiting"
    else
        # dockerd supervises its own containerd and trusts the pid in
        # <exec-root>/containerd/containerd.pid if that pid is alive. /run may
        # survive a restart here and pids get reused, so a stale file can make a
        # fresh dockerd wait on a "containerd" that is some other process and
        # fail with "timeout waiting for containerd to start". Drop it unless it
        # names a live containerd.
        exec_root=/var/run/docker
        prev=""
        for arg in $DOCKERD_ARGS; do
            case "$prev" in --exec-root) exec_root="$arg" ;; esac
            case "$arg" in --exec-root=*) exec_root="${arg#--exec-root=}" ;; esac
            prev="$arg"
        done
        ctr_pidfile="$exec_root/containerd/containerd.pid"
        if [ -f "$ctr_pidfile" ]; then
            cpid="$(cat "$ctr_pidfile" 2>/dev/null || true)"
            if ! { [ -n "$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null || true)" = containerd ]; }; then
                rm -f "$ctr_pidfile"
            fi
        fi

        mkdir -p "$(dirname "$DOCKERD_LOG")"
        printf '\n===== %s: started by ensure-docker.sh =====\n' \
            "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$DOCKERD_LOG"
        # setsid + nohup: own session, immune to SIGHUP, no controlling tty, so the
        # daemon survives this script and the shell that ran it. Inherited fds
        # above 2 are closed so a caller waiting on a pipe is not held open.
        (
            for fd in /proc/self/fd/*; do
                fd="${fd##*/}"
                if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec ${fd}>&-"; fi
            done
            # shellcheck disable=SC2086  # DOCKERD_ARGS is intentionally word-split
            exec setsid nohup dockerd $DOCKERD_ARGS </dev/null >>"$DOCKERD_LOG" 2>&1
        ) &
        started_pid=$!
        disown "$started_pid" 2>/dev/null || true
        notes="${notes}; started dockerd, log $DOCKERD_LOG"
    fi

    deadline=$((SECONDS + DOCKERD_WAIT_SECONDS))
    show_log() {
        {
            echo "----- last 40 lines of $DOCKERD_LOG -----"
            tail -n 40 "$DOCKERD_LOG" 2>/dev/null || echo "(no log)"
            echo "-----------------------------------------"
        } >&2
    }
    until docker_ok; do
        if [ -n "$started_pid" ] && ! kill -0 "$started_pid" 2>/dev/null && ! docker_ok; then
            show_log
            die "dockerd exited during start-up (see $DOCKERD_LOG)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log
            die "Docker engine did not become ready within ${DOCKERD_WAIT_SECONDS}s (see $DOCKERD_LOG)"
        fi
        sleep 1
    done
fi

version="$(timeout 20 docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)"
echo "docker: engine ready (version ${version}${notes})"
