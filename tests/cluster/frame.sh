#!/bin/sh
# The cluster tests' command renderer: one small text file per frame, after a pause so that
# faults land mid-job. Appends "<wall time> <host> start|end <job> <frame>" to
# $PF_CLUSTER_LOG (shared by every host of a test) so the test can count renders exactly.
set -eu
frame=${PEERFARM_FRAME:?}
out=${PEERFARM_OUTPUT_DIR:?}
log=${PF_CLUSTER_LOG:-/dev/null}
host=${PF_CLUSTER_HOST:-unknown}
job=$(basename "$PWD")
echo "$(date +%s.%N) $host start $job $frame" >> "$log"
sleep "${PF_CLUSTER_SLEEP:-0.4}"
printf 'peerfarm cluster test frame %s\n' "$frame" > "$out/frame_$(printf %04d "$frame").txt"
echo "$(date +%s.%N) $host end $job $frame" >> "$log"
echo "PROGRESS 100%"
