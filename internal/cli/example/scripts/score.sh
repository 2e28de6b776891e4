#!/bin/sh
# Sum each player's points in one competition into a leaderboard file.
set -eu
events="$1"
competition="$2"
board="$(dirname "$events")/board-$competition.csv"
awk -F, -v c="$competition" 'NR > 1 && $2 == c { points[$1] += $3 }
  END { for (p in points) print points[p] "," p }' "$events" | sort -t, -k1,1nr -k2 > "$board"
rows=$(wc -l < "$board" | tr -d ' ')
leader=$(head -n 1 "$board" | cut -d, -f2)
echo "$competition: $rows players, $leader leads"
echo "::dray-output::{\"competition\": \"$competition\", \"rows\": $rows, \"leader\": \"$leader\", \"path\": \"$board\"}"
