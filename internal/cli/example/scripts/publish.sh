#!/bin/sh
# Print the top N players of each leaderboard (a real pipeline would post them).
set -eu
top="$1"
shift
for board in "$@"; do
  echo "== $(basename "$board" .csv | sed 's/^board-//')"
  head -n "$top" "$board" | awk -F, '{ printf "  %d. %s (%d points)\n", NR, $2, $1 }'
done
