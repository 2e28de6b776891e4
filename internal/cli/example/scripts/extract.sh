#!/bin/sh
# Extract the day's game events into data/DAY/events.csv. A real pipeline would
# read them from an API or a bucket; this one makes them up, the same for the
# same day, so it runs offline.
set -eu
day="$1"
out="data/$day"
mkdir -p "$out"
seed=$(printf '%s' "$day" | tr -cd '0-9')
awk -v seed="$seed" 'BEGIN {
  srand(seed % 100000)
  split("chess go poker bridge", games, " ")
  print "player,competition,points"
  for (i = 0; i < 400; i++)
    printf "player%02d,%s,%d\n", int(rand() * 40), games[1 + int(rand() * 4)], int(rand() * 100)
}' > "$out/events.csv"
rows=$(($(wc -l < "$out/events.csv") - 1))
echo "extracted $rows events for $day into $out/events.csv"
echo "::dray-output::{\"path\": \"$out/events.csv\", \"rows\": $rows}"
