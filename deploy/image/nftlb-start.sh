#!/bin/sh
# The nftlb container's entrypoint (in the image as /usr/local/bin/nftlb-start.sh).
#
# Makes sure the pod has an nftlb API key, then execs nftlb listening on 127.0.0.1 only.
#
# The key lives in the pod's memory-backed emptyDir, which only this container and the reconciler
# container mount. It is made once per pod from /dev/urandom and kept when this container
# restarts, because the reconciler reads it once when it starts (`kube-nftlb run` waits for the
# file). It is written whole (a temp file renamed into place) with mode 0440 and this process's
# group, which the DaemonSet sets (runAsGroup) to the reconciler's group.
#
# nftlb gets the key in its environment (NFTLB_SERVER_KEY), never on its command line, which every
# user on the node can read in /proc/<pid>/cmdline. nftlb also prints its key on stdout, so stdout
# goes to /dev/null; its logs go to stderr (-L 2) and so to the container log.
#
# Environment (the defaults are what the DaemonSet uses; the tests override them):
#   KUBE_NFTLB_KEY_FILE  the key file                      default /run/kube-nftlb/key
#   NFTLB_PORT           the REST API's port on 127.0.0.1  default 5555
#   NFTLB_LOG_LEVEL      nftlb -l, 0 (least) to 7 (most)   default 5
#   NFTLB_BIN            the daemon                        default /usr/sbin/nftlb
set -eu

KEY_FILE=${KUBE_NFTLB_KEY_FILE:-/run/kube-nftlb/key}
PORT=${NFTLB_PORT:-5555}
LOG_LEVEL=${NFTLB_LOG_LEVEL:-5}
NFTLB_BIN=${NFTLB_BIN:-/usr/sbin/nftlb}

if [ ! -s "$KEY_FILE" ]; then
    tmp=$(mktemp "$KEY_FILE.XXXXXX")
    # 32 random bytes as 64 hex digits. printf is a shell builtin: the key is in no process's argv.
    key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    if [ "${#key}" -ne 64 ]; then
        rm -f "$tmp"
        echo "nftlb-start: could not read 32 random bytes" >&2
        exit 1
    fi
    printf '%s\n' "$key" >"$tmp"
    chmod 0440 "$tmp"
    mv -f "$tmp" "$KEY_FILE"
    echo "nftlb-start: made a new API key in $KEY_FILE" >&2
else
    echo "nftlb-start: reusing the API key in $KEY_FILE" >&2
fi

NFTLB_SERVER_KEY=$(cat "$KEY_FILE")
export NFTLB_SERVER_KEY
exec "$NFTLB_BIN" -H 127.0.0.1 -P "$PORT" -L 2 -l "$LOG_LEVEL" >/dev/null
