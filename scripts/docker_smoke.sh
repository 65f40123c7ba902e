#!/usr/bin/env bash
# Build the CPU image and run the "Docker" commands of docs/operations.md on a real engine.
#
#   bash scripts/docker_smoke.sh [--dicom FILE]
#   bash scripts/docker_smoke.sh --print-commands   # the documented lines as they would run; no engine
#
# 1. Base: uses python:3.11-slim-bookworm when it is present or can be pulled;
#    otherwise builds a stand-in from Debian packages (debootstrap, as root) and
#    tags it with that name, so the Dockerfile stays unchanged.
# 2. The documented `docker build` line; image size; no build leftovers in /app.
# 3. The documented `docker run` lines, taken from docs/operations.md itself and changed only
#    where a test must: the volume (pneumo-data -> a throw-away volume), the
#    published port (8000:8000 -> 127.0.0.1:<free port>), `-d --name` on server
#    runs, the token and file in the curl line. In order, on one volume:
#    a. the plain run with no login: exits 3 naming PNEUMO_ACCESS_PASSWORD;
#    b. the -e PNEUMO_ACCESS_PASSWORD run: healthy, clean log, the password logs in;
#    c. create-user --password-stdin, create-token, the plain run: healthy, clean
#       log, a real SIIM DICOM uploaded with the token, every process uid 10001,
#       docker restart, the result read back, docker stop within 10 s.
# Progress lines start with "smoke:"; the last line is "SMOKE {json of figures}".
# Exit 0: every check passed; 1: a check failed; 2: no Docker engine reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=python:3.11-slim-bookworm
IMAGE=pneumo                      # the documented tag
UID_EXPECTED=10001
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-python3}
DICOM=""
PRINT_ONLY=0
while [ $# -gt 0 ]; do
  case $1 in
    --dicom) DICOM=$2; shift 2 ;;
    --print-commands) PRINT_ONLY=1; shift ;;
    *) echo "usage: $0 [--dicom FILE] [--print-commands]" >&2; exit 64 ;;
  esac
done
if [ -z "$DICOM" ]; then
  DICOM=$(find ../shared/data/siim -name '*.dcm' 2>/dev/null | sort | sed -n 1p)
fi
[ "$PRINT_ONLY" = 1 ] || [ -f "$DICOM" ] || { echo "smoke: no DICOM to upload (pass --dicom FILE)" >&2; exit 1; }

TAG=pneumo-smoke-$$
VOLUME=$TAG-data
NAME=$TAG
declare -A FIG=()

say() { echo "smoke: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
fail() {
  echo "smoke: FAILED: $*" >&2
  if docker inspect "$NAME" >/dev/null 2>&1; then
    echo "--- docker logs $NAME (last 40 lines) ---" >&2
    docker logs --tail 40 "$NAME" >&2 2>&1 || true
  fi
  exit 1
}
cleanup() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  docker volume rm "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

# --- the documented Docker lines ----------------------------------------------
DOCS=docs/operations.md           # its "## Docker" section
documented_docker_lines() {  # the lines of the code blocks in $DOCS's "## Docker" section, comments cut off
  awk '/^## /{ s = ($0 ~ /^## Docker/) } s && /^```/{ c = !c; next } s && c' "$DOCS" \
    | sed -E 's/[[:space:]]+#.*$//'
}
documented_line() {  # documented_line ERE: the one documented Docker line matching ERE
  local lines n
  lines=$(documented_docker_lines | grep -E -- "$1" || true)
  n=$(printf '%s' "$lines" | grep -c . || true)
  [ "$n" = 1 ] || fail "$DOCS's Docker section has $n lines matching /$1/, expected 1"
  printf '%s\n' "$lines"
}
adapt() {  # documented line -> the line run here (volume, port)
  local s=$1
  s=${s//-v pneumo-data:\/data/-v $VOLUME:\/data}
  s=${s//-p 8000:8000/-p 127.0.0.1:$PORT:8000}
  printf '%s' "$s"
}
adapt_server() {  # ... and detached, named
  local s; s=$(adapt "$1")
  printf '%s' "${s/docker run /docker run -d --name $NAME }"
}

BUILD_LINE=$(documented_line '^docker build -t pneumo \.$')
PLAIN_LINE=$(documented_line '^docker run -p 8000:8000 -v pneumo-data:/data pneumo$')
PASSWORD_LINE=$(documented_line '^docker run .*-e PNEUMO_ACCESS_PASSWORD=.* pneumo$')
USER_LINE=$(documented_line '^docker run --rm -i .* pneumo create-user [^ ]+ --password-stdin$')
TOKEN_LINE=$(documented_line '^docker run --rm .* pneumo create-token [^ ]+$')
CURL_LINE=$(documented_line '^curl .*Bearer .*/api/v1/predictions$')
ACCESS_PW=$(sed -nE "s/.*PNEUMO_ACCESS_PASSWORD=('([^']*)'|\"([^\"]*)\"|([^ ]*)).*/\2\3\4/p" \
  <<<"$PASSWORD_LINE")
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
if [ "$PRINT_ONLY" = 1 ]; then  # what would run, without an engine (tests/test_docker.py)
  printf '%s\n' "$BUILD_LINE" "$(adapt_server "$PLAIN_LINE")" "$(adapt_server "$PASSWORD_LINE")" \
    "$(adapt "$USER_LINE")" "$(adapt "$TOKEN_LINE")" "$CURL_LINE"
  exit 0
fi

if ! docker info >/dev/null 2>&1; then
  echo "smoke: no Docker engine reachable (docker info failed)" >&2
  exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$TAG.XXXXXX")
trap cleanup EXIT

# --- 1. base image ---------------------------------------------------------
build_standin_base() {
  [ "$(id -u)" = 0 ] || fail "$BASE cannot be pulled; building the stand-in needs root"
  command -v debootstrap >/dev/null || fail "$BASE cannot be pulled; install debootstrap"
  local root=$WORK/rootfs
  debootstrap --variant=minbase \
    --include=python3.11,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  # This machine's extra CAs (e.g. an egress proxy's), so pip in the build reaches PyPI.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
  chroot "$root" update-ca-certificates >/dev/null 2>&1
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  # apt as the official Debian images set it: no package caches kept after an install
  printf '%s\n' \
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$root/etc/apt/apt.conf.d/docker-clean"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL pneumo.stand-in=debootstrap' \
    --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$root"
}

if docker image inspect "$BASE" >/dev/null 2>&1; then
  FIG[base]=present
elif timeout 120 docker pull "$BASE" >"$WORK/pull.log" 2>&1; then
  FIG[base]=pulled
else
  say "$BASE cannot be pulled ($(tail -n 1 "$WORK/pull.log")); building the stand-in"
  t=$(now); build_standin_base; FIG[base_build_s]=$(since "$t")
  FIG[base]=stand-in-built
fi
if [ -n "$(docker image inspect -f '{{index .Config.Labels "pneumo.stand-in"}}' "$BASE" 2>/dev/null)" ]; then
  FIG[base]="${FIG[base]} (debootstrap stand-in)"
fi
say "base $BASE: ${FIG[base]}"

# --- 2. build ----------------------------------------------------------------
say "$BUILD_LINE"
t=$(now)
eval "$BUILD_LINE" >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; fail "docker build failed"; }
FIG[build_s]=$(since "$t")
FIG[image_bytes]=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "built in ${FIG[build_s]} s, $(awk -v b="${FIG[image_bytes]}" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
leftovers=$(docker run --rm --entrypoint sh "$IMAGE" -c \
  'ls -d /app/build /app/*.egg-info 2>/dev/null; test -w "$HOME" && test -w "$MPLCONFIGDIR" || echo "home not writable: $HOME $MPLCONFIGDIR"')
[ -z "$leftovers" ] || fail "image: $leftovers"

# --- helpers for running containers ---------------------------------------
wait_healthy() {  # sets READY_S (first /readyz 200 seen from here) and HEALTHY_S, from $1
  local t0=$1 state deadline=$((SECONDS + 300))
  READY_S=""; HEALTHY_S=""
  while [ $SECONDS -lt $deadline ]; do
    if [ -z "$READY_S" ] && curl -fsS -o /dev/null --max-time 2 "$URL/readyz" 2>/dev/null; then
      READY_S=$(since "$t0")
    fi
    state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME")
    case $state in
      "running healthy") HEALTHY_S=$(since "$t0"); READY_S=${READY_S:-$HEALTHY_S}; return 0 ;;
      running*) sleep 0.25 ;;
      *) fail "container is '$state' (exit $(docker inspect -f '{{.State.ExitCode}}' "$NAME")) before healthy" ;;
    esac
  done
  fail "not healthy after 300 s"
}
check_clean_log() {  # the log has no ERROR, CRITICAL, Traceback or Permission denied line
  local bad
  bad=$(docker logs "$NAME" 2>&1 | grep -E 'ERROR|CRITICAL|Traceback|Permission denied|\[(emerg|alert|crit|error)\]' || true)
  [ -z "$bad" ] || fail "the log of a clean start has error lines: $bad"
}
stop_container() {  # docker stop within 10 s (SIGTERM honoured, not SIGKILL), exit code 0
  local t code; t=$(now)
  docker stop "$NAME" >/dev/null
  STOP_S=$(since "$t")
  code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
  awk -v s="$STOP_S" 'BEGIN { exit !(s < 10) }' || fail "docker stop took $STOP_S s"
  [ "$code" = 0 ] || fail "stopped with exit code $code"
}
http() {  # http CURL-ARGS...: prints the status code; the body goes to $WORK/body
  curl -sS -o "$WORK/body" -w '%{http_code}' --max-time 120 "$@"
}

# --- 3a. no login: the plain run refuses to start ------------------------------
docker volume create "$VOLUME" >/dev/null
say "$(adapt_server "$PLAIN_LINE")   (empty volume: must refuse)"
eval "$(adapt_server "$PLAIN_LINE")" >/dev/null
code=$(timeout 300 docker wait "$NAME") || fail "the run without a login did not exit"
[ "$code" = 3 ] || fail "the run without a login exited $code, expected 3"
docker logs "$NAME" >"$WORK/refusal.log" 2>&1
grep -q PNEUMO_ACCESS_PASSWORD "$WORK/refusal.log" || fail "the refusal does not say what to do"
! grep -q Traceback "$WORK/refusal.log" || fail "exit 3 from a crash, not the refusal: $(tail -n 5 "$WORK/refusal.log")"
docker rm "$NAME" >/dev/null
say "no login: exit 3 with the message"

# --- 3b. the shared password -------------------------------------------------
say "$(adapt_server "$PASSWORD_LINE")"
t=$(now); eval "$(adapt_server "$PASSWORD_LINE")" >/dev/null
wait_healthy "$t"
FIG[password_ready_s]=$READY_S; FIG[password_healthy_s]=$HEALTHY_S
check_clean_log
[ "$(http "$URL/api/v1/predictions")" = 401 ] || fail "the API answered without a login"
[ "$(http -c "$WORK/jar" -b "$WORK/jar" "$URL/login")" = 200 ] || fail "GET /login"
csrf=$(sed -nE 's/.*name="csrf_token" value="([^"]*)".*/\1/p' "$WORK/body" | head -n 1)
[[ $(http -c "$WORK/jar" -b "$WORK/jar" --data-urlencode "csrf_token=$csrf" \
      --data-urlencode "password=$ACCESS_PW" "$URL/login") == 30[23] ]] || fail "the password did not log in"
[ "$(http -b "$WORK/jar" "$URL/api/v1/predictions")" = 200 ] || fail "the API refused the logged-in session"
stop_container
docker rm "$NAME" >/dev/null
say "password: ready ${FIG[password_ready_s]} s, healthy ${FIG[password_healthy_s]} s, login works, stop $STOP_S s"

# --- 3c. user + token, upload, uid, restart, read back, stop ----------------
say "$(adapt "$USER_LINE")"
printf '%s\n' "smoke-test passphrase $$" | eval "$(adapt "$USER_LINE")" >"$WORK/user.log" 2>&1 \
  || { cat "$WORK/user.log" >&2; fail "create-user failed"; }
say "$(adapt "$TOKEN_LINE")"
TOKEN=$(eval "$(adapt "$TOKEN_LINE")" </dev/null 2>"$WORK/token.err" | grep -E '^pn_' || true)
[ -n "$TOKEN" ] || { cat "$WORK/token.err" >&2; fail "create-token printed no token"; }

say "$(adapt_server "$PLAIN_LINE")"
t=$(now); eval "$(adapt_server "$PLAIN_LINE")" >/dev/null
wait_healthy "$t"
FIG[ready_s]=$READY_S; FIG[healthy_s]=$HEALTHY_S
FIG[healthy_after_ready_s]=$(awk -v a="$READY_S" -v b="$HEALTHY_S" 'BEGIN { printf "%.2f", b - a }')
check_clean_log
say "ready ${FIG[ready_s]} s, healthy ${FIG[healthy_s]} s after docker run"

curl_line=${CURL_LINE//pn_.../$TOKEN}
curl_line=${curl_line//http:\/\/127.0.0.1:8000/$URL}
curl_line=$(sed -E "s#files=@[^ ]+#files=@'$DICOM'#" <<<"$curl_line")
say "${curl_line//$TOKEN/pn_...}"
out=$(eval "$curl_line -sS -o '$WORK/upload.json' -w '%{http_code} %{time_total}'")
read -r status upload_s <<<"$out"
FIG[upload_s]=$upload_s
[ "$status" = 201 ] || fail "upload answered $status: $(head -c 500 "$WORK/upload.json")"
RESULT_ID=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["results"][0]["id"])' \
  "$WORK/upload.json")
say "upload: 201 in ${FIG[upload_s]} s, result $RESULT_ID"

uids=$(docker exec "$NAME" sh -c \
  'for f in /proc/[0-9]*/status; do sed -n "s/^Uid:[[:space:]]*\([0-9]*\).*/\1/p" "$f"; done' | sort -u)
pid1=$(docker exec "$NAME" sh -c 'tr "\0" " " </proc/1/cmdline')
[ "$uids" = "$UID_EXPECTED" ] || fail "process uids: $(echo $uids), expected only $UID_EXPECTED"
[[ $pid1 == *gunicorn* ]] || fail "PID 1 is '$pid1', not gunicorn (the entrypoint must exec)"
FIG[uid]=$uids
say "every process runs as uid $uids; PID 1: $pid1"

t=$(now); docker restart "$NAME" >/dev/null
wait_healthy "$t"
FIG[restart_healthy_s]=$HEALTHY_S
check_clean_log
status=$(http -H "Authorization: Bearer $TOKEN" "$URL/api/v1/predictions/$RESULT_ID")
[ "$status" = 200 ] || fail "after restart the result answered $status"
"$PY" -c 'import json, sys; assert json.load(open(sys.argv[1]))["id"] == sys.argv[2]' \
  "$WORK/body" "$RESULT_ID" || fail "after restart the result has another id"
say "restart: healthy again in ${FIG[restart_healthy_s]} s, result $RESULT_ID read back"

stop_container
FIG[stop_s]=$STOP_S
say "docker stop: $STOP_S s, exit code 0"

pairs=()
for k in "${!FIG[@]}"; do pairs+=("$k=${FIG[$k]}"); done
"$PY" scripts/smoke_figures.py "${pairs[@]}"
