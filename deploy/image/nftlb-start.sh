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
# goes to /dev/null; its logs go to stderr (-L 2), through a filter (awk, reading a FIFO in the
# key directory, so that nftlb is still exec'd as the container's main process) that replaces the
# key with <redacted> wherever it appears and writes every line to the container log. The lines
# that say nft refused a batch ("nft command error") or that nftlb rebuilt all its rules
# ("recovery in progress", "nft recovered") also go to $NFTLB_EVENTS_FILE, which the reconciler
# reads to log and count them (docs/faults.md); the file is emptied past 1000 lines.
#
# Environment (the defaults are what the DaemonSet uses; the tests override them):
#   KUBE_NFTLB_KEY_FILE  the key file                      default /run/kube-nftlb/key
#   NFTLB_PORT           the REST API's port on 127.0.0.1  default 5555
#   NFTLB_LOG_LEVEL      nftlb -l, 0 (least) to 7 (most)   default 5
#   NFTLB_BIN            the daemon                        default /usr/sbin/nftlb
#   NFTLB_EVENTS_FILE    nftlb's failure lines             default nftlb-events.log beside the key
set -eu

KEY_FILE=${KUBE_NFTLB_KEY_FILE:-/run/kube-nftlb/key}
PORT=${NFTLB_PORT:-5555}
LOG_LEVEL=${NFTLB_LOG_LEVEL:-5}
NFTLB_BIN=${NFTLB_BIN:-/usr/sbin/nftlb}
KEY_DIR=$(dirname "$KEY_FILE")
EVENTS_FILE=${NFTLB_EVENTS_FILE:-$KEY_DIR/nftlb-events.log}

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

fifo="$KEY_DIR/.nftlb-log"
rm -f "$fifo"
mkfifo -m 0600 "$fifo"
umask 027
# mawk (Debian's awk) reads a pipe in blocks: -W interactive makes it take each line as it comes.
AWK=awk
if awk -W version 2>/dev/null | grep -q mawk; then AWK="awk -W interactive"; fi
# shellcheck disable=SC2016
NFTLB_EVENTS_FILE=$EVENTS_FILE $AWK '
    BEGIN { key = ENVIRON["NFTLB_SERVER_KEY"]; events = ENVIRON["NFTLB_EVENTS_FILE"]; n = 0 }
    {
        line = $0
        if (key != "") {
            while ((i = index(line, key)) > 0)
                line = substr(line, 1, i - 1) "<redacted>" substr(line, i + length(key))
        }
        print line > "/dev/stderr"
        fflush("/dev/stderr")
        if (line ~ /nft command error|recovery in progress|nft recovered/) {
            if (++n > 1000) { close(events); printf "" > events; close(events); n = 1 }
            print line >> events
            fflush(events)
        }
    }' <"$fifo" &
exec "$NFTLB_BIN" -H 127.0.0.1 -P "$PORT" -L 2 -l "$LOG_LEVEL" >/dev/null 2>"$fifo"
