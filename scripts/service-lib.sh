# Shared by scripts/local-slurm.sh and scripts/mlflow-server.sh (sourced; set NAME first): one-line errors,
# a free loopback port, and Debian packages installed when missing.

cannot() { echo "$NAME: $*" >&2; exit 3; }  # this machine cannot run it (the tests skip on exit 3)
die() { echo "$NAME: $*" >&2; exit 1; }

# A port nothing listens on yet (bash's /dev/tcp connect fails), from the unprivileged range.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
    die "no free port found"
}

# apt_install PACKAGE...: as root with apt-get; the package lists may be stale or absent on a fresh machine,
# so they are updated once if the first try fails.
apt_install() {
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || cannot "$* not installed and no root apt-get to install it"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$@" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; } \
        || cannot "apt-get could not install $*"
}
