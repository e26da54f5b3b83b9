#!/bin/sh
# clusterbench.sh: three nats-server processes as one NATS cluster, three
# bootstrap servers in cluster mode (one per NATS node), N clients held on
# each by tools/cmd/loadgen (one loadgen per server, workers of at most
# 10,000 connections, 50 clients per 127.x.y.z source address), and the
# NATS traffic from the nodes' monitoring endpoints (/varz). See
# BENCHMARKS.md, "Several bootstrap servers on NATS (issue 13)".
#
# Build first, then run it inside a private network namespace:
#
#	cd bootstrap-server && GOWORK=off go build -o /tmp/nats-server github.com/nats-io/nats-server/v2
#	go build -o /tmp/bootstrap-server ./cmd/bootstrap-server
#	cd ../tools && go build -o /tmp/loadgen ./cmd/loadgen
#	unshare -n sh -c 'ip link set lo up; tools/clusterbench.sh'
#
# Environment: N (clients per server, 10000; N1, N2, N3 per server), HOLD (hold, 150s, long
# enough for the measures made inside it), SUBS (push subscribers, 20),
# JOINS (timed cross-server joins per pair, 200), CHURN (clients
# registered then closed for the per-join/leave cost, 3000), OUT (files).
set -eu
N=${N:-10000}
HOLD=${HOLD:-150s}
SUBS=${SUBS:-20}
JOINS=${JOINS:-200}
CHURN=${CHURN:-3000}
OUT=${OUT:-/tmp/clusterbench}
NATS=${NATS_BIN:-/tmp/nats-server}
BS=${BOOTSTRAP_BIN:-/tmp/bootstrap-server}
LG=${LOADGEN_BIN:-/tmp/loadgen}
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.txt

pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }

# varz: "in_msgs out_msgs in_bytes out_bytes", summed over the three nodes.
varz() {
	for i in 1 2 3; do
		curl -s "http://127.0.0.1:822$i/varz" | jq -r '"\(.in_msgs) \(.out_msgs) \(.in_bytes) \(.out_bytes)"'
	done | awk '{a+=$1; b+=$2; c+=$3; d+=$4} END {printf "%d %d %d %d\n", a, b, c, d}'
}
# rate LABEL T0 "V0" T1 "V1": per-second deltas.
rate() {
	echo "$3 $5" | awk -v l="$1" -v dt="$(echo "$4 - $2" | bc)" \
		'{printf "%s over %.1f s (3 nodes summed): in %.1f msg/s, out %.1f msg/s, in %.0f B/s, out %.0f B/s\n", l, dt, ($5-$1)/dt, ($6-$2)/dt, ($7-$3)/dt, ($8-$4)/dt}'
}
snap() { # snap TAG: RSS, fds and cluster metrics of each server
	for i in 1 2 3; do
		eval p=\$BS$i
		rss=$(awk '/VmRSS/ {print $2}' /proc/$p/status)
		fds=$(ls /proc/$p/fd | wc -l)
		echo "$1 server$i pid $p rss_kib $rss fds $fds"
		curl -s "http://127.0.0.1:1808$i/metrics" | grep -E '^parlance_bootstrap_(connections|registered_peers|cluster_[a-z_]*)[ {]' | sed "s/^/$1 server$i /" >>"$OUT/metrics.txt"
	done | tee -a "$OUT/servers.txt"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), open files limit $(ulimit -n)" | tee "$OUT/summary.txt"

# NATS cluster of three (flags as e2e/real's cluster test), monitoring on 822i.
for i in 1 2 3; do
	others=""
	for j in 1 2 3; do [ $j = $i ] || others="$others${others:+,}nats://127.0.0.1:622$j"; done
	"$NATS" --name "nats$i" --addr 127.0.0.1 --port 422$i -m 822$i \
		--cluster_name parlance --cluster "nats://127.0.0.1:622$i" --routes "$others" \
		>"$OUT/nats$i.log" 2>&1 &
	pids="$pids $!"
done
sleep 2
# Three bootstrap servers, server i on NATS node i; pprof on 1809i.
for i in 1 2 3; do
	"$BS" --host 127.0.0.1 --port 1808$i --log-level warn --max-peers 200000 \
		--debug-addr 127.0.0.1:1809$i --nats "nats://127.0.0.1:422$i" --nats-name "bs$i" \
		>"$OUT/bs$i.log" 2>&1 &
	eval BS$i=$!
	pids="$pids $!"
done
for i in 1 2 3; do
	for _ in $(seq 50); do curl -sf "http://127.0.0.1:1808$i/healthz" >/dev/null && break; sleep 0.2; done
done
sleep 5
snap base

# Beats only: three servers, no clients.
t0=$(now); v0=$(varz); sleep 20; t1=$(now); v1=$(varz)
rate "idle (beats only)" "$t0" "$v0" "$t1" "$v1" | tee -a "$OUT/summary.txt"

# N clients on each server, held for HOLD; the measures below run inside
# the hold, one at a time.
t0=$(now)
for i in 1 2 3; do
	eval p=\$BS$i n=\${N$i:-$N}
	"$LG" -url "ws://127.0.0.1:1808$i/" -pid "$p" -n "$n" -max-per-worker 10000 -hold "$HOLD" \
		-samples 5 -subscribers 0 -timeout 10m >"$OUT/loadgen$i.log" 2>&1 &
	eval LG$i=$!
done
for i in 1 2 3; do
	for _ in $(seq 1200); do grep -q '^registered' "$OUT/loadgen$i.log" && break; sleep 0.1; done
done
t1=$(now)
echo "all three loadgens registered their clients $(echo "$t1 - $t0" | bc) s after their start (includes each loadgen's 1 s settle and worker start)" | tee -a "$OUT/summary.txt"
grep -h '^registered' "$OUT"/loadgen?.log | tee -a "$OUT/summary.txt"
sleep 2
t0=$(now); v0=$(varz); sleep 20; t1=$(now); v1=$(varz)
rate "$((3 * N)) clients held (beats and heartbeats)" "$t0" "$v0" "$t1" "$v1" | tee -a "$OUT/summary.txt"
snap held
echo "load average during the hold: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"

# Cross-server push: SUBS subscribers on server i, JOINS joins on server
# i+1, one pair at a time, with the 3N clients held.
for i in 1 2 3; do
	j=$((i % 3 + 1))
	eval p=\$BS$i
	"$LG" -url "ws://127.0.0.1:1808$i/" -pid "$p" -n 1 -hold 0s -samples 0 -subscribers "$SUBS" -joins "$JOINS" \
		-join-url "ws://127.0.0.1:1808$j/" -timeout 3m >"$OUT/push$i.log" 2>&1 || echo "push$i failed" | tee -a "$OUT/summary.txt"
	grep -h '^push' "$OUT/push$i.log" | tee -a "$OUT/summary.txt"
done
sleep 2

# Churn: CHURN clients register on server 1 and close, with the 3N held;
# the NATS traffic beyond the beats, over 2*CHURN joins and leaves.
t0=$(now); v0=$(varz)
"$LG" -url ws://127.0.0.1:18081/ -pid "$BS1" -n "$CHURN" -hold 2s -samples 0 -subscribers 0 -timeout 2m >"$OUT/churn.log" 2>&1
sleep 3
t1=$(now); v1=$(varz)
echo "$v0 $v1" | awk -v dt="$(echo "$t1 - $t0" | bc)" -v c="$CHURN" '
	{ printf "churn: %d joins + %d leaves on server 1 in %.1f s (3 nodes summed, beats included): in %d msgs, out %d msgs, in %d B, out %d B\n", c, c, dt, $5-$1, $6-$2, $7-$3, $8-$4 }' | tee -a "$OUT/summary.txt"
grep -E '^registered' "$OUT/churn.log" | tee -a "$OUT/summary.txt"
for i in 1 2 3; do eval wait \$LG$i || echo "loadgen$i failed" | tee -a "$OUT/summary.txt"; done
grep -h -E '^(hold|list_peers)' "$OUT"/loadgen?.log | tee -a "$OUT/summary.txt"
snap end
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/summary.txt"
