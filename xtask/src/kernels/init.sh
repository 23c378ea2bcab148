#!/bin/busybox sh
# PID 1 of a kernel-matrix guest (see mod.rs): runs the scenarios a user would on a new server, as root, on the
# distribution's default settings (perf_event_paranoid included), and reports on the serial console. Every line
# meant for the host starts with "@@"; a file is sent as "@@file NAME", its lines, "@@eof". Ends by powering off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
ip link set lo up

say() { echo "@@$*"; }
now() { cut -d' ' -f1 /proc/uptime; }
show() {
    say file "$1"
    [ -f "$2" ] && cat "$2"
    echo
    say eof
}
# wait_for TEXT FILE PID SECONDS: until FILE holds TEXT; fails when PID exits first or after SECONDS.
wait_for() {
    n=0
    while ! grep -q "$1" "$2" 2>/dev/null; do
        kill -0 "$3" 2>/dev/null || return 1
        n=$((n + 1))
        [ "$n" -gt $(($4 * 5)) ] && return 1
        sleep 0.2
    done
}
# MODE (smoke or full) and the seconds each recording lasts once attached, written by the host.
. /etc/kernels.conf

say kernel "$(uname -r)"
say paranoid "$(cat /proc/sys/kernel/perf_event_paranoid)"
say btf "$(wc -c < /sys/kernel/btf/vmlinux 2>/dev/null || echo missing)"
say cpus "$(grep -c ^processor /proc/cpuinfo)"

# record: one recording of a parent shell whose children are the workloads. native-burn and the Python spin loop
# exist before the profiler starts (existing descendants); family (which forks) and the crashing program are
# started by the parent once the programs are attached, so they are followed through fork alone. The crash comes 4 s
# after its exec: under emulation the profiler takes seconds to read a new image's maps, and a crash before that
# has no stack to show. The workloads run at nice 10: they are about eight busy threads on two emulated CPUs, and at
# equal priority the profiler, which is what is checked here, got so little CPU that whole seconds of samples were
# lost (a forked child's life among them, on 6.12 once in three runs).
mkdir -p /tmp/crashes
sh -c '
    renice -n 10 -p $$ >/dev/null
    /w/native-burn &
    python3 /w/spin.py &
    python3 /w/grow.py /tmp/grow.json 2 &
    while [ ! -e /tmp/go ]; do sleep 0.1; done
    touch /tmp/family.out.go /tmp/crash.go
    /w/family /tmp/family.out 3000 5000 &
    /w/crash-by-name /tmp/crash.go 4000
    wait
' &
PARENT=$!
say step record start "$(now)"
/profiler record --pid "$PARENT" --duration "${RECORD_SECONDS}s" --crash-dir /tmp/crashes --profile cpu,off-cpu,memory \
    -o /tmp/record.folded -o /tmp/record.pb.gz 2>/tmp/record.log &
REC=$!
if wait_for "capabilities after attaching" /tmp/record.log "$REC" 900; then
    say step record attached "$(now)"
fi
touch /tmp/go
wait "$REC"
say step record end "rc=$?" "$(now)"
show record.log /tmp/record.log
show record.folded /tmp/record.folded
show record.off-cpu.folded /tmp/record.off-cpu.folded
show record.memory.folded /tmp/record.memory.folded
show family.out /tmp/family.out
for report in /tmp/crashes/*.txt; do
    [ -f "$report" ] && show "crash.txt" "$report"
done
pkill -f /w/native-burn
pkill -f /w/spin.py
pkill -f /w/grow.py
kill "$PARENT" 2>/dev/null

# push: `profiler run` pushing to a receiver on the guest's loopback, stopped with SIGTERM, which sends the last
# window.
python3 /w/receiver.py 4040 >/tmp/receiver.log 2>&1 &
RECEIVER=$!
/w/native-burn &
BURN=$!
say step push start "$(now)"
PYROSCOPE_SERVER_URL=http://127.0.0.1:4040 /profiler run --pid "$BURN" --app-name kernels-smoke \
    --crash-dir /tmp/run-crashes 2>/tmp/run.log &
RUN=$!
if wait_for "capabilities after attaching" /tmp/run.log "$RUN" 900; then
    say step push attached "$(now)"
    sleep "$PUSH_SECONDS"
fi
kill -TERM "$RUN"
wait "$RUN"
say step push end "rc=$?" "$(now)"
show run.log /tmp/run.log
show receiver.log /tmp/receiver.log
kill "$BURN" "$RECEIVER" 2>/dev/null

say done "$(now)"
poweroff -f
