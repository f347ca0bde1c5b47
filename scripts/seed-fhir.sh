#!/bin/sh
# Load the demo patients (FHIR transaction Bundles) into the FHIR server named by FHIR_BASE.
# Used by docker-compose's one-shot "seed" job; safe to re-run (every entry is a PUT).
# The demo patients' dates are relative to today ("@-30d" = 30 days ago, "@+0d" = today), so
# the demo never expires: each is resolved here, against TODAY (YYYY-MM-DD; default: today's
# UTC date), as `cds-service evaluate` and `demo-traffic` resolve them. Plain POSIX sh (the
# seed job runs in a small curl image): the calendar arithmetic is done in $(( )).
set -eu
base="${FHIR_BASE:-http://localhost:8081/fhir}"
dir="${DEMO_DIR:-$(dirname "$0")/../fixtures/fhir/demo}"
today="${TODAY:-$(date -u +%Y-%m-%d)}"

# days since 1970-01-01 of a Y M D (H. Hinnant's days_from_civil)
days_from_civil() {
  y=$1 m=$2 d=$3
  [ "$m" -le 2 ] && y=$((y - 1))
  era=$((y / 400))
  yoe=$((y - era * 400))
  if [ "$m" -gt 2 ]; then mp=$((m - 3)); else mp=$((m + 9)); fi
  doy=$(((153 * mp + 2) / 5 + d - 1))
  doe=$((yoe * 365 + yoe / 4 - yoe / 100 + doy))
  echo $((era * 146097 + doe - 719468))
}

# YYYY-MM-DD of a day number (civil_from_days)
civil_from_days() {
  z=$(($1 + 719468))
  era=$((z / 146097))
  doe=$((z - era * 146097))
  yoe=$(((doe - doe / 1460 + doe / 36524 - doe / 146096) / 365))
  y=$((yoe + era * 400))
  doy=$((doe - (365 * yoe + yoe / 4 - yoe / 100)))
  mp=$(((5 * doy + 2) / 153))
  d=$((doy - (153 * mp + 2) / 5 + 1))
  if [ "$mp" -lt 10 ]; then m=$((mp + 3)); else m=$((mp - 9)); fi
  [ "$m" -le 2 ] && y=$((y + 1))
  printf '%04d-%02d-%02d\n' "$y" "$m" "$d"
}

case "$today" in
  [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
  *) echo "TODAY must be YYYY-MM-DD, not $today" >&2; exit 2 ;;
esac
year=${today%%-*}; rest=${today#*-}; month=${rest%%-*}; day=${rest#*-}
origin=$(days_from_civil "$year" "${month#0}" "${day#0}")

tries=0
until curl -fsS "$base/metadata" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -ge 90 ] && { echo "FHIR server at $base did not come up" >&2; exit 1; }
  sleep 2
done
resolved="$(mktemp)"
trap 'rm -f "$resolved"' EXIT
for bundle in "$dir"/demo-*.json; do
  script=""
  for mark in $(grep -o '"@[-+][0-9]*d' "$bundle" | sort -u); do
    offset=${mark#\"@}; offset=${offset%d}; offset=${offset#+}
    script="$script s/$mark/\"$(civil_from_days $((origin + offset)))/g;"
  done
  sed -e "${script:-p;d}" "$bundle" >"$resolved"
  curl -fsS -X POST -H 'Content-Type: application/fhir+json' --data-binary "@$resolved" "$base" >/dev/null
  echo "seeded $(basename "$bundle")"
done
