#!/usr/bin/env bash
# Run the whole department of deploy/compose.yaml on a real Docker engine and push a
# study through it: Orthanc -> app-a -> PostgreSQL + blob volume -> app-b, and the SEG
# back into Orthanc by the PACS worker.
#
#   bash scripts/compose_smoke.sh [--dicom FILE] [--env-file FILE]
#
# Needs a running Docker engine (it starts none: `docker info` must answer; on this
# machine `nohup dockerd > /tmp/dockerd.log 2>&1 &` as root starts Debian's docker.io),
# and `docker compose` (v2) or Debian's `docker-compose` 1.29 (installed with apt-get,
# as root, when neither is there).
#
# 0. Base images: python:3.11-slim-bookworm (the app) and debian:bookworm-slim (db,
#    orthanc) when present or pullable; otherwise stand-ins made from Debian packages:
#    `bash deploy/debian-base.sh TAG` (debootstrap --variant=minbase bookworm, then
#    `tar -C ROOTFS -c . | docker import - TAG`; as root).
# 1. `compose build`, then `compose up -d` with the test-run values of
#    deploy/example.env, free loopback ports and a project of its own; waits until db,
#    orthanc, app-a and app-b are healthy, blobs-init exited 0 and pacs-worker runs.
# 2. A user and an API token made on app-a (`compose exec -T app-a pneumo ...`); app-a
#    registered in Orthanc as DICOMweb server "pneumo" (PUT /dicom-web/servers/pneumo,
#    Url http://app-a:8000/dicomweb/, Authorization: Bearer <token>).
# 3. A real SIIM DICOM (the first with study, series and SOP UIDs) stored in Orthanc (POST /instances), its study pushed to app-a
#    (POST /dicom-web/servers/pneumo/stow, Synchronous); the result read from app-b
#    (GET /api/v1/predictions with the token) and its SEG downloaded from app-b;
#    then waits until the PACS worker has stored that SEG in Orthanc (QIDO-RS,
#    Modality=SEG in the study; the SOP Instance UID of app-b's SEG).
# 4. No ERROR/Traceback line in any log; `compose stop`: every container exits 0.
# `compose down -v` removes containers, network and volumes at the end, also on failure.
# Progress lines start with "smoke:"; the last line is "SMOKE {json of figures}".
# Exit 0: every check passed; 1: a check failed; 2: no Docker engine reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_FILE=deploy/compose.yaml
ENV_FILE=deploy/example.env
PY=${PYTHON:-python3}
DICOM=""
SMOKE_USER=smoke
while [ $# -gt 0 ]; do
  case $1 in
    --dicom) DICOM=$2; shift 2 ;;
    --env-file) ENV_FILE=$2; shift 2 ;;
    *) echo "usage: $0 [--dicom FILE] [--env-file FILE]" >&2; exit 64 ;;
  esac
done
has_uids() {  # has_uids FILE...: prints the first DICOM (explicit VR) with study, series and SOP UIDs
  "$PY" - "$@" <<'PYEOF'
import re, sys
TAGS = (b"\x20\x00\x0d\x00", b"\x20\x00\x0e\x00", b"\x08\x00\x18\x00")
for path in sys.argv[1:]:
    head = open(path, "rb").read(1 << 16)
    if head[128:132] == b"DICM" and all(
            re.search(re.escape(tag) + rb"UI..[0-9]+\.[0-9.]+", head, re.S) for tag in TAGS):
        print(path)
        break
PYEOF
}
if [ -n "$DICOM" ]; then
  [ -f "$DICOM" ] && [ -n "$(has_uids "$DICOM")" ] \
    || { echo "smoke: $DICOM is not a DICOM file with study, series and SOP UIDs" >&2; exit 1; }
else  # some copies in the shared data lack the UIDs a PACS needs
  mapfile -t candidates < <(find ../shared/data/siim -name '*.dcm' 2>/dev/null | sort)
  DICOM=$([ ${#candidates[@]} = 0 ] || has_uids "${candidates[@]}")
  [ -f "$DICOM" ] || { echo "smoke: no DICOM with study, series and SOP UIDs to push (pass --dicom FILE)" >&2; exit 1; }
fi
[ -f "$ENV_FILE" ] || { echo "smoke: no env file $ENV_FILE" >&2; exit 1; }

PROJECT=pneumo-compose-smoke-$$
declare -A FIG=()
COMPOSE=()
WORK=""
UP=0  # 1 from `compose up` until `compose down`
say() { echo "smoke: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
env_value() { sed -nE "s/^$1=(.*)$/\1/p" "$ENV_FILE" | tail -n 1; }
dc() { "${COMPOSE[@]}" "$@"; }
cid() { dc ps -a -q "$1" 2>/dev/null | head -n 1; }
fail() {
  echo "smoke: FAILED: $*" >&2
  if [ "$UP" = 1 ]; then
    local s id
    for s in db orthanc blobs-init app-a app-b pacs-worker; do
      id=$(cid "$s")
      [ -n "$id" ] || continue
      echo "--- $s: $(docker inspect -f '{{.State.Status}} exit {{.State.ExitCode}}' "$id" 2>/dev/null); last 30 log lines ---" >&2
      docker logs --tail 30 "$id" >&2 2>&1 || true
    done
  fi
  exit 1
}
down() {  # compose down -v: containers, network and volumes (images stay)
  dc down -v --remove-orphans -t 20 >"$WORK/down.log" 2>&1 \
    || { echo "smoke: compose down failed:" >&2; cat "$WORK/down.log" >&2; return 1; }
  UP=0
}
cleanup() {
  if [ "$UP" = 1 ]; then
    echo "smoke: compose down -v" >&2
    down || true
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
}

if ! docker info >/dev/null 2>&1; then
  echo "smoke: no Docker engine reachable (docker info failed); this script starts none:" \
       "start it first (e.g. as root: nohup dockerd > /tmp/dockerd.log 2>&1 &)" >&2
  exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PROJECT.XXXXXX")
trap cleanup EXIT

# --- compose: v2 plugin, or Debian's docker-compose 1.29 ---------------------------
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "neither docker compose nor docker-compose: apt-get install docker-compose"
  { apt-get update -qq && apt-get install -y --no-install-recommends docker-compose; } \
    >"$WORK/apt.log" 2>&1 \
    || { tail -n 20 "$WORK/apt.log" >&2; fail "apt-get install docker-compose failed"; }
  COMPOSE=(docker-compose)
else
  fail "neither \`docker compose\` nor \`docker-compose\` is installed (Debian: apt-get install docker-compose)"
fi
FIG[compose]=$("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n 1)
FIG[compose]="${COMPOSE[*]} ${FIG[compose]}"
FIG[engine]=$(docker version -f '{{.Server.Version}}')
say "${FIG[compose]}, Docker engine ${FIG[engine]}"

# --- 0. base images ----------------------------------------------------------------
for base in python:3.11-slim-bookworm debian:bookworm-slim; do
  if docker image inspect "$base" >/dev/null 2>&1; then
    how=present
  elif timeout 120 docker pull "$base" >"$WORK/pull.log" 2>&1; then
    how=pulled
  else
    say "$base cannot be pulled ($(tail -n 1 "$WORK/pull.log")); making a stand-in"
    t=$(now)
    bash deploy/debian-base.sh "$base" >"$WORK/base.log" 2>&1 \
      || { cat "$WORK/base.log" >&2; fail "deploy/debian-base.sh $base failed"; }
    how="stand-in made in $(since "$t") s"
  fi
  if [ -n "$(docker image inspect -f '{{index .Config.Labels "pneumo.stand-in"}}' "$base")" ]; then
    how="$how (debootstrap stand-in)"
  fi
  FIG[base_${base%%:*}]=$how
  say "base $base: $how"
done

# --- 1. build, up, healthy ---------------------------------------------------------
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PNEUMO_A_PORT=$(free_port); PNEUMO_B_PORT=$(free_port)
ORTHANC_HTTP_PORT=$(free_port); ORTHANC_DICOM_PORT=$(free_port)
export PNEUMO_A_PORT PNEUMO_B_PORT ORTHANC_HTTP_PORT ORTHANC_DICOM_PORT
COMPOSE+=(-p "$PROJECT" -f "$COMPOSE_FILE" --env-file "$ENV_FILE")
A=http://127.0.0.1:$PNEUMO_A_PORT
B=http://127.0.0.1:$PNEUMO_B_PORT
ORTHANC=http://127.0.0.1:$ORTHANC_HTTP_PORT
ORTHANC_AUTH="$(env_value ORTHANC_USERNAME):$(env_value ORTHANC_PASSWORD)"

say "${COMPOSE[*]} build"
t=$(now)
dc build >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; fail "compose build failed"; }
FIG[build_s]=$(since "$t")
say "built in ${FIG[build_s]} s"

say "${COMPOSE[*]} up -d   (A $A, B $B, Orthanc $ORTHANC)"
T_UP=$(now)
UP=1
dc up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "compose up -d failed"; }
FIG[up_returned_s]=$(since "$T_UP")

wait_all() {  # every service in its final start state; FIG[healthy_<service>_s] from up
  local deadline=$((SECONDS + 400)) pending s id state
  while [ $SECONDS -lt $deadline ]; do
    pending=0
    for s in db orthanc blobs-init app-a app-b pacs-worker; do
      [ -z "${FIG[healthy_${s}_s]:-}" ] || continue
      id=$(cid "$s")
      if [ -z "$id" ]; then pending=1; continue; fi
      state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
      case $s:$state in
        blobs-init:"exited 0"*) FIG[healthy_${s}_s]=$(since "$T_UP") ;;
        pacs-worker:"running "*) FIG[healthy_${s}_s]=$(since "$T_UP") ;;
        *:"running 0 healthy") FIG[healthy_${s}_s]=$(since "$T_UP") ;;
        *:running*|*:created*) pending=1 ;;
        *) fail "$s is '$state' before it was healthy" ;;
      esac
    done
    [ $pending = 1 ] || return 0
    sleep 0.5
  done
  fail "not every service healthy after 400 s"
}
wait_all
FIG[all_healthy_s]=$(since "$T_UP")
say "healthy after up: db ${FIG[healthy_db_s]} s, orthanc ${FIG[healthy_orthanc_s]} s," \
    "app-a ${FIG[healthy_app-a_s]} s, app-b ${FIG[healthy_app-b_s]} s (all ${FIG[all_healthy_s]} s)"
for url in "$A" "$B"; do
  curl -fsS -o /dev/null --max-time 5 "$url/readyz" || fail "$url/readyz is not 200 from the host"
done

http() {  # http CURL-ARGS...: prints the status code; the body goes to $WORK/body
  curl -sS -o "$WORK/body" -w '%{http_code}' --max-time 300 "$@"
}
json() {  # json EXPR: EXPR evaluated on the JSON in $WORK/body (as `d`), printed
  "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "$WORK/body" "$1"
}

# --- 2. a user and a token on app-a; app-a as Orthanc's DICOMweb server --------------
printf '%s\n' "smoke passphrase $$ $RANDOM" \
  | dc exec -T app-a pneumo create-user "$SMOKE_USER" --password-stdin >"$WORK/user.log" 2>&1 \
  || { cat "$WORK/user.log" >&2; fail "create-user on app-a failed"; }
TOKEN=$(dc exec -T app-a pneumo create-token "$SMOKE_USER" </dev/null 2>"$WORK/token.err" \
        | tr -d '\r' | grep -E '^pn_' || true)
[ -n "$TOKEN" ] || { cat "$WORK/token.err" >&2; fail "create-token on app-a printed no token"; }
AUTH=(-H "Authorization: Bearer $TOKEN")
say "user $SMOKE_USER and an API token made on app-a"
status=$(http "${AUTH[@]}" "$B/api/v1/predictions")
[ "$status" = 200 ] || fail "app-b refused app-a's token: $status $(head -c 300 "$WORK/body")"

server=$("$PY" -c 'import json, sys; print(json.dumps({"Url": "http://app-a:8000/dicomweb/",
  "HttpHeaders": {"Authorization": "Bearer " + sys.argv[1]}}))' "$TOKEN")
status=$(http -u "$ORTHANC_AUTH" -X PUT --data-binary "$server" "$ORTHANC/dicom-web/servers/pneumo")
[ "$status" = 200 ] || fail "PUT /dicom-web/servers/pneumo: $status $(head -c 300 "$WORK/body")"
say "Orthanc: DICOMweb server pneumo = http://app-a:8000/dicomweb/ (Bearer token)"

# --- 3. Orthanc -> app-a -> app-b, and the SEG back into Orthanc ----------------------
t=$(now)
status=$(http -u "$ORTHANC_AUTH" -X POST --data-binary "@$DICOM" "$ORTHANC/instances")
[ "$status" = 200 ] || fail "storing $DICOM in Orthanc: $status $(head -c 300 "$WORK/body")"
FIG[orthanc_store_s]=$(since "$t")
STUDY=$(json 'd["ParentStudy"]')
status=$(http -u "$ORTHANC_AUTH" "$ORTHANC/studies/$STUDY")
STUDY_UID=$(json 'd["MainDicomTags"]["StudyInstanceUID"]')
FIG[dicom]=$(basename "$DICOM")
say "stored $DICOM in Orthanc in ${FIG[orthanc_store_s]} s: study $STUDY_UID"

T_PUSH=$(now)
status=$(http -u "$ORTHANC_AUTH" -X POST -H 'Content-Type: application/json' \
  --data-binary "{\"Resources\": [\"$STUDY\"], \"Synchronous\": true}" \
  "$ORTHANC/dicom-web/servers/pneumo/stow")
FIG[stow_s]=$(since "$T_PUSH")
[ "$status" = 200 ] || fail "Orthanc's STOW-RS to app-a: $status $(head -c 500 "$WORK/body")"
say "Orthanc pushed the study to app-a (STOW-RS) in ${FIG[stow_s]} s"

deadline=$((SECONDS + 60)); n=0
while [ $SECONDS -lt $deadline ]; do
  status=$(http "${AUTH[@]}" "$B/api/v1/predictions")
  [ "$status" = 200 ] || fail "app-b GET /api/v1/predictions: $status $(head -c 300 "$WORK/body")"
  n=$(json 'len(d["results"])')
  [ "$n" = 0 ] || break
  sleep 0.25
done
FIG[push_to_result_on_b_s]=$(since "$T_PUSH")
[ "$n" = 1 ] || fail "app-b lists $n results for $SMOKE_USER, expected 1"
RESULT_ID=$(json 'd["results"][0]["id"]')
[ "$(json 'd["results"][0]["source_format"]')" = DICOM ] || fail "the result is not from a DICOM"
SEG_PATH=$(json 'd["results"][0]["links"]["seg"]')
FIG[probability]=$(json 'd["results"][0]["probability"]')
FIG[verdict]=$(json 'd["results"][0]["verdict"]')
say "app-b lists result $RESULT_ID (${FIG[verdict]}, p=${FIG[probability]})" \
    "${FIG[push_to_result_on_b_s]} s after the push"

t=$(now)
status=$(curl -sS -o "$WORK/seg.dcm" -w '%{http_code}' --max-time 120 "${AUTH[@]}" "$B$SEG_PATH")
FIG[seg_download_s]=$(since "$t")
[ "$status" = 200 ] || fail "app-b GET $SEG_PATH: $status"
SEG_UID=$("$PY" - "$WORK/seg.dcm" <<'PYEOF'
import re, sys
data = open(sys.argv[1], "rb").read()
assert data[128:132] == b"DICM", "not a DICOM Part 10 file"
assert b"1.2.840.10008.5.1.4.1.1.66.4" in data, "not a Segmentation Storage instance"
# (0008,0018) SOP Instance UID, explicit VR little endian: tag, "UI", 2-byte length
m = re.search(rb"\x08\x00\x18\x00UI(..)", data[132:], re.S)
n = int.from_bytes(m.group(1), "little")
print(data[132 + m.end():132 + m.end() + n].rstrip(b"\0 ").decode())
PYEOF
) || fail "app-b's SEG download is not a DICOM SEG"
FIG[seg_bytes]=$(stat -c %s "$WORK/seg.dcm")
say "SEG downloaded from app-b in ${FIG[seg_download_s]} s (${FIG[seg_bytes]} bytes, $SEG_UID)"

deadline=$((SECONDS + 120)); found=""
while [ $SECONDS -lt $deadline ]; do
  status=$(http -u "$ORTHANC_AUTH" "$ORTHANC/dicom-web/studies/$STUDY_UID/instances?Modality=SEG")
  if [ "$status" = 200 ] && [ -s "$WORK/body" ]; then
    found=$(json '" ".join(i["00080018"]["Value"][0] for i in d)')
    [ -z "$found" ] || break
  fi
  sleep 0.25
done
FIG[push_to_seg_in_pacs_s]=$(since "$T_PUSH")
[ -n "$found" ] || fail "no SEG in Orthanc's study $STUDY_UID 120 s after the push"
[ "$found" = "$SEG_UID" ] || fail "Orthanc holds SEG(s) $found, app-b serves $SEG_UID"
say "the PACS worker stored the SEG in Orthanc ${FIG[push_to_seg_in_pacs_s]} s after the push" \
    "(one instance, the same UID as app-b's)"

# --- 4. logs and a clean stop -------------------------------------------------------
check_log() {  # check_log SERVICE ERE
  local bad
  bad=$(docker logs "$(cid "$1")" 2>&1 | grep -E "$2" || true)
  [ -z "$bad" ] || fail "$1's log has error lines:"$'\n'"$bad"
}
APP_BAD='ERROR|CRITICAL|Traceback|Permission denied|\[(emerg|alert|crit|error)\]|PACS send .* failed'
for s in app-a app-b pacs-worker; do check_log "$s" "$APP_BAD"; done
check_log db '(ERROR|FATAL|PANIC):'
check_log orthanc '^E[0-9]{4} '
say "no error line in any log"

t=$(now)
dc stop -t 20 >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log" >&2; fail "compose stop failed"; }
FIG[stop_s]=$(since "$t")
for s in db orthanc app-a app-b pacs-worker; do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(cid "$s")")
  [ "$code" = 0 ] || fail "$s exited $code on compose stop"
done
say "compose stop: ${FIG[stop_s]} s, every container exit code 0"
t=$(now)
down || fail "compose down -v failed"
FIG[down_s]=$(since "$t")
say "compose down -v: ${FIG[down_s]} s"

pairs=()
for k in "${!FIG[@]}"; do pairs+=("$k=${FIG[$k]}"); done
"$PY" scripts/smoke_figures.py "${pairs[@]}"
