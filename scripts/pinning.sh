# pinning.sh is sourced by scripts/bench.sh and scripts/bench-split.sh: it
# decides where the service side and the load generator run.
#
# pin_cpus SIDE [TOOL...] reads PIN (1: pin, 0: not), SERVER_CPU and
# GEN_CPU, and sets SERVER_ON and GEN_ON (command prefixes), CORES (the
# service side's cores) and PINNING (a label: "pinned: SIDE cpu N,
# generator cpu M", or why not). SIDE names what runs on SERVER_CPU;
# TOOLs are commands needed besides taskset. It exits 2 on a bad PIN.
pin_cpus() {
	local side="$1" why="" tool
	shift
	SERVER_ON=(env)
	GEN_ON=(env)
	CORES="$(nproc)"
	PINNING="unpinned"
	case "$PIN" in
	1)
		for tool in taskset "$@"; do
			command -v "$tool" >/dev/null 2>&1 || why="$tool not found (util-linux)"
		done
		if [ -n "$why" ]; then
			:
		elif [ "$(nproc)" -lt 2 ]; then
			why="$(nproc) CPU available, 2 needed"
		elif ! taskset -c "$SERVER_CPU" true 2>/dev/null || ! taskset -c "$GEN_CPU" true 2>/dev/null; then
			why="cannot run on CPUs $SERVER_CPU and $GEN_CPU"
		elif [ "$SERVER_CPU" = "$GEN_CPU" ]; then
			why="BENCH_SERVER_CPU and BENCH_GEN_CPU are the same"
		fi
		if [ -z "$why" ]; then
			SERVER_ON=(taskset -c "$SERVER_CPU")
			GEN_ON=(taskset -c "$GEN_CPU")
			CORES="$(taskset -c "$SERVER_CPU" nproc)"
			PINNING="pinned: $side cpu $SERVER_CPU, generator cpu $GEN_CPU"
		else
			echo "notice: cannot pin ($why): running unpinned, the generator shares the CPUs of the $side"
			PINNING="unpinned (pinning unavailable: $why)"
		fi
		;;
	0) ;;
	*) echo "BENCH_PIN must be 1 or 0"; exit 2 ;;
	esac
}
