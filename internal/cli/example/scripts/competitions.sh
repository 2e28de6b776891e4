#!/bin/sh
# List the competitions that have events. Outputs go to the file $DRAY_OUTPUT.
set -eu
ids=$(tail -n +2 "$1" | cut -d, -f2 | sort -u | awk '{ printf "%s\"%s\"", sep, $0; sep = ", " }')
echo "competitions: $ids"
printf '{"ids": [%s]}\n' "$ids" > "$DRAY_OUTPUT"
