#!/usr/bin/env bash
# Off-CPU waits of a fresh broker's threads during `wasmq bench e2e`: records every context
# switch of the machine with stacks (`perf record -a -e sched:sched_switch -g`, needs root or
# perf_event_paranoid <= -1), then lists each wait of a broker or client thread of at least
# MIN_MS, from switch-out to switch-in, with its state (D: in the kernel, S: sleeping,
# R: preempted) and kernel/user stack, and a count per stack. Used to find what a late
# delivery waited on (docs/benchmarks/2026-12.md, 2026-12-02). Thread names are per process but not
# unique: the broker's and the client's runtime threads, and tokio's blocking-pool threads,
# are all `tokio-rt-worker` (the thread id and the user frames tell them apart).
# Last, what else ran: every other process's CPU time in the late 100 ms windows and in the
# clean ones, and its longest runs. Some tasks' switches are not recorded at all (on this VM,
# those of pid 1, the sandbox's agent): a span that begins with a switch to such a task and
# ends at the next recorded switch is listed as `unseen`, not given to either side.
#   scripts/e2e-offcpu.sh RATE [MIN_MS [BROKER [CLI]]]   (KEEP=FILE keeps the recording)
set -euo pipefail
RATE=${1:?rate}; MIN_MS=${2:-3}
DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"
BROKER=${3:-$DIR/wasmq-broker} CLI=${4:-$DIR/wasmq}
WORK=$(mktemp -d)
P=
trap '[ -n "$P" ] && { kill "$P"; wait "$P"; } 2>/dev/null; rm -rf "$WORK"' EXIT
(cd "$WORK" && WASMQ_LOG=warn exec "$BROKER" > out 2> err) &
P=$!
for _ in $(seq 1 100); do grep -q "admin token" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
perf record -q -a -g -k CLOCK_MONOTONIC -e sched:sched_switch -o "$WORK/perf.data" -- sleep 13 > /dev/null 2>&1 &
PERF=$!
"$CLI" --ca "$WORK/data/tls/ca.pem" --token "$(cat "$WORK/data/admin-token")" bench e2e --rate "$RATE" --duration 10 > "$WORK/bench" 2>&1 &
CLIENT=$!
wait "$CLIENT"
grep -E "^(e2e|late|deliveries|host steal|measuring)" "$WORK/bench"
wait "$PERF" || true
[ -z "${KEEP:-}" ] || cp "$WORK/perf.data" "$KEEP"
# Stop the broker before the next command: an exiting broker releasing its deleted files
# (truncation, and with a `discard` mount a synchronous discard) shows up in the next trace.
kill "$P"; wait "$P" 2>/dev/null || true
P_WAS=$P P=
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
perf script -i "$WORK/perf.data" -F pid,tid,cpu,time,trace 2> /dev/null | python3 -c '
import collections, re, sys
broker, client, bench = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read()
t0 = float(re.search(r"CLOCK_MONOTONIC ([\d.]+)", bench).group(1))
late = {round(float(w) * 10): int(n) for w, n in re.findall(r"([\d.]+) s: (\d+)", bench.split("by send time:")[-1].split("\n")[0])}
switch = re.compile(r"^\s*(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):.*?prev_comm=(.*?) prev_pid=.*==> next_comm=(.*?) next_pid=(\d+)")
began, ran, longest = {}, collections.defaultdict(collections.Counter), collections.defaultdict(list)
for line in sys.stdin:
    m = switch.match(line)
    if not m:
        continue
    pid, cpu, t = int(m.group(1)), int(m.group(3)), float(m.group(4))
    if cpu in began:
        a, into, into_comm = began[cpu]
        began[cpu] = (t, int(m.group(7)), m.group(6))
        if into != int(m.group(2)) and into != 0:  # switched to at `a`, its switch out unrecorded
            who = f"unseen (from a switch to {into_comm} {into})"
        elif pid in (0, broker, client) or into == 0:
            continue
        else:
            who = f"{pid} {m.group(5)}"
        if 0 <= a - t0 < 10:
            longest[who].append((1000 * (t - a), a - t0))
        while a < t:  # split the run over the 100 ms windows it spans
            w = int((a - t0) * 10)
            b = max(min(t, t0 + (w + 1) / 10), a + 1e-6)
            if 0 <= w < 100:
                ran[who][w] += 1000 * (min(b, t) - a)
            a = b
    else:
        began[cpu] = (t, int(m.group(7)), m.group(6))
n_late = sum(1 for w in range(100) if late.get(w))
print(f"--- other processes, CPU ms per 100 ms window: in the {n_late} late windows / in the {100 - n_late} others; longest runs in the measured 10 s")
for who, per in sorted(ran.items(), key=lambda kv: -sum(kv[1].values()))[:12]:
    in_late = sum(ms for w, ms in per.items() if late.get(w))
    runs = ", ".join(f"{ms:.1f} ms at {at:.2f} s" for ms, at in sorted(longest[who])[-3:])
    print(f"{who}: {in_late / max(1, n_late):.2f} / {(sum(per.values()) - in_late) / max(1, 100 - n_late):.2f}; {runs}")
' "$P_WAS" "$CLIENT" "$WORK/bench"
