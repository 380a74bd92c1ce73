#!/bin/sh
# peerfarm example for the command renderer: writes one small image per frame.
# peerfarm runs it once per frame with PEERFARM_FRAME and PEERFARM_OUTPUT_DIR (an empty folder);
# every file left there is an output of the frame. PEERFARM_SLEEP (seconds, default 0) pretends
# the frame takes a while. Try it: PEERFARM_FRAME=3 PEERFARM_OUTPUT_DIR=/tmp ./render.sh
set -eu
frame=${PEERFARM_FRAME:?PEERFARM_FRAME is not set}
out=${PEERFARM_OUTPUT_DIR:?PEERFARM_OUTPUT_DIR is not set}
sleep "${PEERFARM_SLEEP:-0}"
# A 32x24 binary PPM whose colour depends on the frame number.
red=$(( (frame * 37) % 256 ))
green=$(( (frame * 91) % 256 ))
blue=$(( 255 - red ))
file="$out/frame.ppm"
printf 'P6\n32 24\n255\n' > "$file"
pixel=$(printf '\\%03o\\%03o\\%03o' "$red" "$green" "$blue")
i=0
while [ "$i" -lt 768 ]; do
    printf "$pixel"
    i=$((i + 1))
done >> "$file"
echo "PROGRESS 100%"
echo "frame $frame written to $file"
