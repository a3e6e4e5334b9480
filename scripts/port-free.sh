#!/usr/bin/env bash
# scripts/port-free.sh PORT WHAT [HINT]: exit 0 if nothing listens on 127.0.0.1:PORT, else one line naming
# the port (and HINT: how to choose another) and exit 1. Why: `mlflow ui` / `mlflow server` on a taken port log "Address already in use" and exit 0, and
# the browser then shows whichever server holds the port (`make ui` and `make server` both defaulted to 5000).
set -euo pipefail
PORT=${1:?usage: $0 PORT WHAT}
WHAT=${2:-the server}
HINT=${3:-choose another port}
case "$PORT" in
    '' | *[!0-9]*) echo "$WHAT: port '$PORT' is not a port number (1-65535)" >&2; exit 2 ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
    echo "$WHAT: port $PORT is not a port number (1-65535)" >&2; exit 2
fi
if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "$WHAT: port $PORT on 127.0.0.1 is taken by another program; $HINT" >&2
    exit 1
fi
