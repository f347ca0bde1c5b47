#!/bin/sh
# Load the demo patients (FHIR transaction Bundles) into the FHIR server named by FHIR_BASE.
# Used by docker-compose's one-shot "seed" job; safe to re-run (every entry is a PUT).
set -eu
base="${FHIR_BASE:-http://localhost:8081/fhir}"
dir="${DEMO_DIR:-$(dirname "$0")/../fixtures/fhir/demo}"
tries=0
until curl -fsS "$base/metadata" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -ge 90 ] && { echo "FHIR server at $base did not come up" >&2; exit 1; }
  sleep 2
done
for bundle in "$dir"/demo-*.json; do
  curl -fsS -X POST -H 'Content-Type: application/fhir+json' --data-binary "@$bundle" "$base" >/dev/null
  echo "seeded $(basename "$bundle")"
done
