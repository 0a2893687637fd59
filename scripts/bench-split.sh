#!/usr/bin/env bash
# bench-split.sh measures split domain keys (docs/split-keys.md,
# "Benchmarks"): the service with Vault and the key-share plugin on this
# machine, as scripts/vault-dev.sh sets them up (the project's Vault, the
# plugin registered and mounted, AppRoles, the audit device, mTLS), driven
# by pseudobench over mTLS with the same client certificate against the
# split demo domain therlink_v1 and, for comparison, the single-mode
# prescriptions_v1. It needs Go and, to pin, taskset and setsid
# (util-linux).
#
# It builds cmd/pseudonymizer and cmd/pseudoctl, and in the bench/ module
# cmd/pseudobench and cmd/splitbench (the helper that reads the processes'
# CPU time and reports); starts scripts/vault-dev.sh in a temporary
# directory and waits until it is ready; starts the pseudonymizer command
# line it prints; then runs, each domain in turn (split, then single):
#
#   low     unary 1-item calls, open loop at BENCH_LOW_RATE calls/s: the
#           p50 latency difference split − single is the plugin hop
#   1x8     unary 1-item calls, 8 callers, closed loop
#   100x2   batches of 100, 2 callers, closed loop: the throughput
#
# Around each pseudobench invocation splitbench reads the CPU time
# (/proc/<pid>/stat, utime + stime) of the service, of Vault (the parent
# of the plugin process) and of the plugin process (found by its path in
# the set-up's plugin directory), the service's item counter (its
# /metrics) and the plugin round trips in Vault's audit log; CPU per item
# = CPU time ÷ items, in ScalarMults (pseudobench times ScalarMult in each
# invocation; the report uses their median). It prints the table and the
# three targets of issue 11 and writes split-latest.json and
# split-latest.md into BENCH_OUT.
#
# Pinning: the service, Vault and the plugin run on BENCH_SERVER_CPU (the
# plugin is Vault's child and inherits its CPUs) and pseudobench on
# BENCH_GEN_CPU; the ceiling is then cores(BENCH_SERVER_CPU) ÷ 2
# ScalarMult for the three service-side processes together, as the target
# means (Vault on the same machine as the service). Three processes cannot
# each have a CPU of their own on 2 cores: this keeps the generator off
# them. Unpinned (BENCH_PIN=0, or taskset/setsid/2 CPUs missing) every
# process shares every CPU, the generator included.
#
# With BENCH_PROFILE=1 it then does one more split 100x2 run while taking
# a CPU profile of the service (PSEUDONYMIZER_CPUPROFILE) and of the plugin
# process (PSEUDONYMIZER_PLUGIN_CPUPROFILE), both started and stopped with
# SIGUSR1/SIGUSR2 (package internal/cpuprofile), and of Vault (its
# /v1/sys/pprof/profile, with the dev root token), prints their top
# entries and writes split-server.{pprof,bin}, split-plugin.{pprof,bin}
# and split-vault.pprof into BENCH_OUT.
#
# Environment (all optional):
#   BENCH_DURATION      measured time of the 1x8 and 100x2 runs, whole
#                       seconds (default 10s)
#   BENCH_LOW_DURATION  measured time of the low-load runs (default 20s)
#   BENCH_LOW_RATE      calls/s of the low-load runs (default 10)
#   BENCH_PIN           1 (default): pin as above; 0: unpinned
#   BENCH_SERVER_CPU    CPU list of the service, Vault and the plugin (default 0)
#   BENCH_GEN_CPU       CPU list of pseudobench (default 1)
#   BENCH_PROFILE=1     the profiles above
#   BENCH_RUNS          which runs, of "low 1x8 100x2" (the default)
#   BENCH_SCHED         the service side's scheduling policy: other (the
#                       default) or batch (SCHED_BATCH, chrt -b 0: a
#                       process woken does not preempt the one running)
#   BENCH_GOMAXPROCS    GOMAXPROCS of the service, Vault and the plugin
#                       (default: Go's, which is the number of CPUs they
#                       are pinned to: 1)
#   BENCH_PSEUDOBENCH_FLAGS  extra flags for every pseudobench invocation
#   BENCH_SERVER_FLAGS  extra flags for the service (after the printed
#                       command line and -rate 0, which lifts the
#                       per-principal rate limit as scripts/bench.sh does)
#   BENCH_OUT           results directory (default bench/results)
# Takes about 2 minutes with the defaults, plus the first builds (Vault
# itself, once: scripts/vault-bin.sh). Everything listens on loopback and
# is stopped on exit.
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."
ROOT="$PWD"

DURATION="${BENCH_DURATION:-10s}"
LOW_DURATION="${BENCH_LOW_DURATION:-20s}"
LOW_RATE="${BENCH_LOW_RATE:-10}"
PIN="${BENCH_PIN:-1}"
SERVER_CPU="${BENCH_SERVER_CPU:-0}"
GEN_CPU="${BENCH_GEN_CPU:-1}"
PROFILE="${BENCH_PROFILE:-0}"
RUNS="${BENCH_RUNS:-low 1x8 100x2}"
GOMAXPROCS_SIDE="${BENCH_GOMAXPROCS:-}"
SCHED="${BENCH_SCHED:-other}"
OUT="${BENCH_OUT:-$ROOT/bench/results}"
for d in "$DURATION" "$LOW_DURATION"; do
	[[ "$d" =~ ^[1-9][0-9]*s$ ]] || { echo "BENCH_DURATION and BENCH_LOW_DURATION must be whole seconds (10s)"; exit 2; }
done
for r in $RUNS; do
	case "$r" in low | 1x8 | 100x2) ;; *) echo "BENCH_RUNS: unknown run $r (low, 1x8, 100x2)"; exit 2 ;; esac
done
case "$SCHED" in other | batch) ;; *) echo "BENCH_SCHED must be other or batch"; exit 2 ;; esac
[[ -z "$GOMAXPROCS_SIDE" || "$GOMAXPROCS_SIDE" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_GOMAXPROCS must be a positive whole number"; exit 2; }
[[ "$LOW_RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "BENCH_LOW_RATE must be a number of calls/s"; exit 2; }
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

step() { printf '\n== %s\n' "$*"; }
secs() { echo "${1%s}"; }

# Where the service side (service, Vault, plugin) and the generator run.
# shellcheck source=scripts/pinning.sh
. scripts/pinning.sh
pin_cpus "service + Vault + plugin" setsid
if [ "$SCHED" = batch ]; then SERVER_ON=(chrt -b 0 "${SERVER_ON[@]}"); fi
BOUND=(env)
if command -v timeout >/dev/null 2>&1; then BOUND=(timeout -k 10); fi
echo "mode: $PINNING; ceiling for $CORES service-side core(s)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-split.XXXXXX")"
TMP="$(cd "$TMP" && pwd)" # absolute: the profilers refuse a relative path
DIR="$TMP/vault-dev"
VDEV_PID="" SERVER_PID="" VDEV_GROUP=0
stop_pid() { # pid, signal, seconds: signal, wait, then SIGKILL
	local pid="$1" sig="$2" n=$(($3 * 10))
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	while [ "$n" -gt 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; n=$((n - 1)); done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	set +e
	if [ -n "$SERVER_PID" ]; then stop_pid "$SERVER_PID" TERM 10; fi
	if [ -n "$VDEV_PID" ] && kill -0 "$VDEV_PID" 2>/dev/null; then
		# As Ctrl-C: vault-dev stops Vault, which stops the plugin.
		if [ "$VDEV_GROUP" = 1 ]; then
			kill -INT -- "-$VDEV_PID" 2>/dev/null
			for _ in $(seq 1 300); do kill -0 "$VDEV_PID" 2>/dev/null || break; sleep 0.1; done
			kill -KILL -- "-$VDEV_PID" 2>/dev/null
			wait "$VDEV_PID" 2>/dev/null
		else
			stop_pid "$VDEV_PID" INT 30
		fi
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "build"
mkdir -p "$TMP/bin"
go build -o "$TMP/bin/" ./cmd/pseudonymizer ./cmd/pseudoctl
(cd bench && go build -o "$TMP/" ./cmd/pseudobench ./cmd/splitbench)
VAULT_BIN="$(scripts/vault-bin.sh)"
# Warm the build cache: vault-dev.sh builds these again, pinned.
scripts/vault-plugin.sh >/dev/null
go build -o "$TMP/vaultdev" ./scripts/vaultdev
SB="$TMP/splitbench"

step "start scripts/vault-dev.sh in $DIR ($PINNING)"
VDEV_ENV=(env "PATH=$TMP/bin:$PATH" "VAULT_BIN=$VAULT_BIN")
if [ -n "$GOMAXPROCS_SIDE" ]; then VDEV_ENV+=("GOMAXPROCS=$GOMAXPROCS_SIDE"); fi
if [ "$PROFILE" = 1 ]; then
	# Reaches the plugin through Vault's environment; off otherwise.
	VDEV_ENV+=("PSEUDONYMIZER_PLUGIN_CPUPROFILE=$TMP/plugin.pprof")
fi
SETSID=()
if command -v setsid >/dev/null 2>&1; then SETSID=(setsid); fi
"${SETSID[@]}" "${VDEV_ENV[@]}" "${SERVER_ON[@]}" scripts/vault-dev.sh "$DIR" >"$TMP/vault-dev.out" 2>"$TMP/vault-dev.err" &
VDEV_PID=$!
if [ "$(ps -o pgid= -p "$VDEV_PID" 2>/dev/null | tr -d ' ')" = "$VDEV_PID" ]; then VDEV_GROUP=1; fi
for _ in $(seq 1 1800); do
	grep -q '^vault-dev: ready' "$TMP/vault-dev.out" && break
	if ! kill -0 "$VDEV_PID" 2>/dev/null; then
		echo "vault-dev.sh exited:"; tail -20 "$TMP/vault-dev.err"; exit 1
	fi
	sleep 0.1
done
grep -q '^vault-dev: ready' "$TMP/vault-dev.out" || { echo "vault-dev.sh not ready in 3 minutes:"; tail -20 "$TMP/vault-dev.err"; exit 1; }
SERVER_LINE="$(sed -n 's/^ *\(pseudonymizer -listen .*\)$/\1/p' "$TMP/vault-dev.out")"
VAULT_ADDR="$(sed -n 's/^Vault \(http:[^ ]*\) .*/\1/p' "$TMP/vault-dev.out")"
ROOT_TOKEN="$(sed -n 's/^ *root token \([^,]*\),.*/\1/p' "$TMP/vault-dev.out")"
ADDR="$(sed -n 's/.* -listen \([^ ]*\) .*/\1/p' <<<"$SERVER_LINE")"
METRICS="$(sed -n 's/.* -metrics-listen \([^ ]*\).*/\1/p' <<<"$SERVER_LINE")"
if [ -z "$SERVER_LINE" ] || [ -z "$VAULT_ADDR" ] || [ -z "$ADDR" ] || [ -z "$METRICS" ]; then
	echo "could not read the command lines vault-dev.sh printed:"; cat "$TMP/vault-dev.out"; exit 1
fi
echo "Vault $VAULT_ADDR, service $ADDR (metrics $METRICS)"

# The plugin process(es), by their path in this set-up's plugin directory;
# Vault is their parent.
PLUGIN_EXE="$DIR/plugins/pseudonymizer-vault-plugin"
find_procs() {
	local lines
	lines="$("$SB" pids -exe "$PLUGIN_EXE")"
	PLUGIN_PIDS="$(awk '{print $1}' <<<"$lines" | paste -sd, -)"
	VAULT_PID="$(awk '{print $2}' <<<"$lines" | sort -u)"
	if [ -z "$PLUGIN_PIDS" ] || [ "$(wc -w <<<"$VAULT_PID")" != 1 ] ||
		[ "$(readlink "/proc/$VAULT_PID/exe")" != "$(readlink -f "$VAULT_BIN")" ]; then
		echo "cannot find the plugin process and its parent Vault (plugin $PLUGIN_PIDS, parent $VAULT_PID)"; exit 1
	fi
}
find_procs
echo "Vault pid $VAULT_PID, plugin pid $PLUGIN_PIDS (CPUs $(taskset -pc "$VAULT_PID" 2>/dev/null | sed 's/.*: //' || echo unknown))"

SERVER_LINE="$SERVER_LINE -rate 0 ${BENCH_SERVER_FLAGS:-}"
step "start the service: $SERVER_LINE"
SERVER_ENV=(env "PATH=$TMP/bin:$PATH")
if [ -n "$GOMAXPROCS_SIDE" ]; then SERVER_ENV+=("GOMAXPROCS=$GOMAXPROCS_SIDE"); fi
if [ "$PROFILE" = 1 ]; then SERVER_ENV+=("PSEUDONYMIZER_CPUPROFILE=$TMP/server.pprof"); fi
"${SERVER_ON[@]}" "${SERVER_ENV[@]}" bash -c "exec $SERVER_LINE" >"$TMP/server.out" 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 1 600); do
	grep -q '"msg":"pseudonymizer: serving"' "$TMP/server.log" 2>/dev/null && break
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "the service exited:"; tail -20 "$TMP/server.log"; exit 1
	fi
	sleep 0.1
done
grep -q '"msg":"pseudonymizer: serving"' "$TMP/server.log" || { echo "the service is not serving after 60 s:"; tail -20 "$TMP/server.log"; exit 1; }
echo "service pid $SERVER_PID (CPUs $(taskset -pc "$SERVER_PID" 2>/dev/null | sed 's/.*: //' || echo unknown))"

LOG="$OUT/split-pseudobench.txt"
: >"$LOG"
RECS=()
# run MODE DOMAIN NAME SPEC SECONDS_FLAG [pseudobench flags…]
run() {
	local mode="$1" domain="$2" name="$3" spec="$4" dur="$5"
	shift 5
	local rec="$TMP/rec-$mode-$name.json" pb="$TMP/pb-$mode-$name.json"
	find_procs
	echo "-- $mode ($domain) $name: $spec, $dur; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "== $mode ($domain) $name" >>"$LOG"
	local status=0
	# shellcheck disable=SC2086
	"${GEN_ON[@]}" "$SB" run -out "$rec" -domain "$domain" -mode "$mode" -run "$name" \
		-proc "server=$SERVER_PID" -proc "vault=$VAULT_PID" -proc "plugin=$PLUGIN_PIDS" \
		-metrics "http://$METRICS/metrics" -audit "$DIR/audit.log" -bench-json "$pb" -- \
		"${BOUND[@]}" $(($(secs "$dur") + 120)) "$TMP/pseudobench" -q \
		-addr "$ADDR" -ca "$DIR/ca.crt" -cert "$DIR/client.crt" -key "$DIR/client.key" \
		-domain "$domain" -op pseudonymize -runs "$spec" -duration "$dur" -points 1024 -wait 30s \
		-cores "$CORES" -pinning "$PINNING" -pid "$SERVER_PID" -json "$pb" "$@" ${BENCH_PSEUDOBENCH_FLAGS:-} >>"$LOG" 2>&1 || status=$?
	if [ "$status" -ne 0 ] || [ ! -s "$rec" ]; then
		echo "   failed (status $status): see $LOG"; tail -5 "$LOG"; tail -5 "$TMP/server.log"
		[ -s "$rec" ] || exit 1
	fi
	RECS+=("$rec")
}

step "runs (split: therlink_v1, single: prescriptions_v1; $PINNING)"
uptime || true
for what in $RUNS; do
	for m in split single; do
		d=therlink_v1
		[ "$m" = single ] && d=prescriptions_v1
		case "$what" in
		low) run "$m" "$d" low 1x1 "$LOW_DURATION" -rate "$LOW_RATE" ;;
		*) run "$m" "$d" "$what" "$what" "$DURATION" ;;
		esac
	done
done
uptime || true

step "report"
"$SB" report -cores "$CORES" -pinning "$PINNING" -json "$OUT/split-latest.json" -md "$OUT/split-latest.md" "${RECS[@]}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); pseudobench's output in $LOG"

if [ "$PROFILE" = 1 ]; then
	step "CPU profiles of the plugin path: split 100x2, $DURATION (plugin process and Vault)"
	find_procs
	envfile="/proc/${PLUGIN_PIDS%%,*}/environ"
	plugin_prof=0
	if tr '\0' '\n' <"$envfile" 2>/dev/null | grep -q '^PSEUDONYMIZER_PLUGIN_CPUPROFILE='; then plugin_prof=1; fi
	[ "$plugin_prof" = 1 ] || echo "notice: the plugin process did not get PSEUDONYMIZER_PLUGIN_CPUPROFILE: no plugin profile"
	VAULT_TOKEN="$ROOT_TOKEN" "$SB" vault-profile -addr "$VAULT_ADDR" -seconds $(($(secs "$DURATION") + 2)) -o "$OUT/split-vault.pprof" &
	vprof=$!
	if [ "$plugin_prof" = 1 ]; then kill -USR1 "${PLUGIN_PIDS%%,*}"; fi
	# The service installs the handler when it has the variable: without
	# it, SIGUSR1 would end it.
	server_prof=0
	if tr '\0' '\n' <"/proc/$SERVER_PID/environ" 2>/dev/null | grep -q '^PSEUDONYMIZER_CPUPROFILE='; then server_prof=1; fi
	[ "$server_prof" = 1 ] || echo "notice: the service did not get PSEUDONYMIZER_CPUPROFILE: no service profile"
	if [ "$server_prof" = 1 ]; then kill -USR1 "$SERVER_PID"; fi
	run split therlink_v1 profile 100x2 "$DURATION"
	if [ "$server_prof" = 1 ]; then kill -USR2 "$SERVER_PID"; fi
	for _ in $(seq 1 50); do [ -s "$TMP/server.pprof" ] && break; sleep 0.1; done
	sleep 0.5
	if [ -s "$TMP/server.pprof" ]; then
		cp "$TMP/server.pprof" "$OUT/split-server.pprof"
		cp "$TMP/bin/pseudonymizer" "$OUT/split-server.bin"
	else
		echo "notice: no profile of the service"
	fi
	if [ "$plugin_prof" = 1 ]; then
		kill -USR2 "${PLUGIN_PIDS%%,*}"
		for _ in $(seq 1 50); do [ -s "$TMP/plugin.pprof" ] && break; sleep 0.1; done
		sleep 0.5
		cp "$TMP/plugin.pprof" "$OUT/split-plugin.pprof"
		cp "$PLUGIN_EXE" "$OUT/split-plugin.bin"
	fi
	wait "$vprof" || echo "notice: no Vault profile"
	if [ "$plugin_prof" = 1 ]; then
		echo; echo "plugin process, flat:"
		go tool pprof -top -nodecount=20 "$OUT/split-plugin.bin" "$OUT/split-plugin.pprof" 2>/dev/null | sed -n '4,30p'
		echo; echo "plugin process, cumulative:"
		go tool pprof -top -cum -nodecount=20 "$OUT/split-plugin.bin" "$OUT/split-plugin.pprof" 2>/dev/null | sed -n '6,30p'
	fi
	if [ -s "$OUT/split-server.pprof" ]; then
		echo; echo "service, flat:"
		go tool pprof -top -nodecount=20 "$OUT/split-server.bin" "$OUT/split-server.pprof" 2>/dev/null | sed -n '4,30p'
		echo; echo "service, cumulative:"
		go tool pprof -top -cum -nodecount=25 "$OUT/split-server.bin" "$OUT/split-server.pprof" 2>/dev/null | sed -n '6,35p'
	fi
	if [ -s "$OUT/split-vault.pprof" ]; then
		echo; echo "Vault, flat:"
		go tool pprof -top -nodecount=20 "$OUT/split-vault.pprof" 2>/dev/null | sed -n '4,30p'
		echo; echo "Vault, cumulative:"
		go tool pprof -top -cum -nodecount=20 "$OUT/split-vault.pprof" 2>/dev/null | sed -n '6,30p'
	fi
	# Each process makes one ScalarMult per item (k₁ in the service, k₂ in
	# the plugin): its CPU per item in its own ScalarMults, timed on its
	# CPU in this very run, is 1 ÷ ScalarMult's share of its profile. This
	# ruler does not move with the reference timing of pseudobench (another
	# CPU, between runs), which the VM's neighbours shift by ±25 %.
	sm_share() { go tool pprof -top -cum -nodecount=400 "$1" "$2" 2>/dev/null |
		awk '/edwards25519\.\(\*Point\)\.ScalarMult$/ { sub("%", "", $5); print $5 / 100; exit }'; }
	if [ -s "$OUT/split-server.pprof" ] && [ "$plugin_prof" = 1 ]; then
		srv_share="$(sm_share "$OUT/split-server.bin" "$OUT/split-server.pprof")"
		plg_share="$(sm_share "$OUT/split-plugin.bin" "$OUT/split-plugin.pprof")"
		if [ -n "$srv_share" ] && [ -n "$plg_share" ]; then
			echo
			"$SB" own -rec "$TMP/rec-split-profile.json" -server-share "$srv_share" -plugin-share "$plg_share" | tee -a "$OUT/split-latest.md"
		fi
	fi
	echo "explore: go tool pprof -http : $OUT/split-plugin.bin $OUT/split-plugin.pprof (and split-server.*, split-vault.pprof)"
fi

echo
echo "mode: $PINNING"
echo "wrote $OUT/split-latest.json and $OUT/split-latest.md"
