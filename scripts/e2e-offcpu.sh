#!/usr/bin/env bash
# Off-CPU waits of a fresh broker's threads during `wasmq bench e2e`: records every context
# switch of the machine with stacks (`perf record -a -e sched:sched_switch -g`, needs root or
# perf_event_paranoid <= -1), then lists each wait of a broker or client thread of at least
# MIN_MS, from switch-out to switch-in, with its state (D: in the kernel, S: sleeping,
# R: preempted) and kernel/user stack, and a count per stack. Used to find what a late
# delivery waited on (docs/benchmarks.md, 2026-12-02). Thread names are per process but not
# unique: the broker's and the client's runtime threads, and tokio's blocking-pool threads,
# are all `tokio-rt-worker` (the thread id and the user frames tell them apart).
#   scripts/e2e-offcpu.sh RATE [MIN_MS [BROKER [CLI]]]   (KEEP=FILE keeps the recording)
set -euo pipefail
RATE=${1:?rate}; MIN_MS=${2:-3}
DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"
BROKER=${3:-$DIR/wasmq-broker} CLI=${4:-$DIR/wasmq}
WORK=$(mktemp -d)
P=
trap '[ -n "$P" ] && kill "$P" 2>/dev/null; rm -rf "$WORK"' EXIT
(cd "$WORK" && WASMQ_LOG=warn exec "$BROKER" > out 2> err) &
P=$!
for _ in $(seq 1 100); do grep -q "admin token" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
perf record -q -a -g -e sched:sched_switch -o "$WORK/perf.data" -- sleep 13 > /dev/null 2>&1 &
PERF=$!
"$CLI" --ca "$WORK/data/tls/ca.pem" --token "$(cat "$WORK/data/admin-token")" bench e2e --rate "$RATE" --duration 10 2>&1 |
  grep -E "^(e2e|late|deliveries)"
wait "$PERF" || true
[ -z "${KEEP:-}" ] || cp "$WORK/perf.data" "$KEEP"
# Stop the broker before the next command: an exiting broker releasing its deleted files
# (truncation, and with a `discard` mount a synchronous discard) shows up in the next trace.
kill "$P"; wait "$P" 2>/dev/null || true
P=
perf script -i "$WORK/perf.data" -F tid,time,trace,ip,sym 2> /dev/null | python3 -c '
import collections, re, sys
min_s = float(sys.argv[1]) / 1000
switch = re.compile(r"^\s*(\d+)\s+([\d.]+): prev_comm=(.*?) prev_pid=(\d+) .*?prev_state=(\S+) ==> next_comm=.*? next_pid=(\d+)")
skip = ("__schedule", "schedule", "[unknown]")
out, counts, event = {}, collections.Counter(), None
def close(ev):
    t, comm, prev, state, nxt, stack = ev
    out[prev] = (t, comm, state, stack)
    if nxt in out:
        t0, c, st, stk = out.pop(nxt)
        if t - t0 >= min_s and (c.startswith(("tokio", "wasmq"))):
            where = " < ".join([s for s in stk if s not in skip][:12])
            print(f"{t0:.3f} {1000 * (t - t0):8.2f} ms {c} {nxt} {st} {where}")
            counts[(c, st, where)] += 1
for line in sys.stdin:
    m = switch.match(line)
    if m:
        if event: close(event)
        event = (float(m.group(2)), m.group(3), m.group(4), m.group(5), m.group(6), [])
    elif event and len(line.split()) >= 2:
        event[5].append(line.split()[1])
if event: close(event)
print("--- waits per thread, state and stack")
for (c, st, where), n in counts.most_common(30):
    print(n, c, st, where)
' "$MIN_MS"
