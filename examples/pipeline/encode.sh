#!/bin/sh
# An encode step for a chain of jobs: a command-renderer job of one frame that turns the frames
# of the job named in its argument into a video, which becomes this job's output (delivered to
# the submitter like any frame). Submit it after the render:
#   peerfarm submit examples/povray 1-24 --name shot
#   peerfarm submit examples/pipeline/encode.sh 1 --after shot --name shot-video --option args='["shot"]'
# It runs on whichever peer (started with --allow-command) takes it: `peerfarm encode` there
# fetches the frames from the farm and runs ffmpeg; the daemon sets PEERFARM_DATA_DIR, so the
# verb talks to that peer.
set -eu
job=${1:?give the render job (id, prefix or name) as the argument}
peerfarm encode "$job" "$PEERFARM_OUTPUT_DIR/$job.mp4"
