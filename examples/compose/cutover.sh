# shellcheck shell=bash
# The stages deploy.sh and rollback.sh share; sourced by them, not run.
#
# Both move a route's traffic from its active slot (OLD) to another slot
# (NEW) in the same order:
#
#   start NEW → NEW healthy in switchyard's own checks → smoke test through
#   the front door (override header) → switch → drain OLD → stop OLD
#
# Until the switch nothing touches traffic, and any failure stops NEW again.
# From the switch on, traffic stays on NEW whatever happens next; a later
# failure only leaves OLD running, and the last line says so.
#
# Settings come from the environment, with defaults for docker-compose.yml
# beside this file; README.md lists them.

KIT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

# The exit codes, as documented atop deploy.sh and rollback.sh.
readonly EXIT_UNEXPECTED=1 EXIT_USAGE=2 EXIT_UNHEALTHY=3 EXIT_SMOKE=4 \
  EXIT_SWITCH=5 EXIT_DRAIN=6 EXIT_STOP=7 EXIT_GUARD=8

SCRIPT=cutover # the word that starts every line: deploy or rollback
STAGE=preflight
OLD='' NEW='' VERSION=''
NEW_STARTED=0 # a failure before the switch stops NEW again
SWITCHED=0    # traffic is on NEW
FAIL_CODE=''  # set by fail(); an exit without it was unexpected
TMP=''
ROUTE_JSON='' STATUS_ERROR=''

say() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }

# Its input on one line, for messages.
one_line() { tr -s '\n' ' ' | sed 's/ *$//'; }

# Ends the run with exit code $1 after saying why; the EXIT trap cleans up.
fail() {
  local code=$1
  shift
  FAIL_CODE=$code
  say "FAILED at $STAGE: $*"
  exit "$code"
}

# Reads and checks the settings, takes the route's lock and sets the traps.
cutover_setup() {
  SCRIPT=$1
  # docker compose reads COMPOSE_FILE, so the default hooks and the default
  # CLI find this kit's compose file from any working directory.
  export COMPOSE_FILE=${COMPOSE_FILE:-$KIT_DIR/docker-compose.yml}
  ROUTE=${ROUTE:-app}
  SLOTS=${SLOTS:-blue green}
  FRONT_URL=${FRONT_URL:-http://127.0.0.1}
  FRONT_URL=${FRONT_URL%/}
  SMOKE_PATH=${SMOKE_PATH:-/}
  SMOKE_EXPECT=${SMOKE_EXPECT:-200}
  SMOKE_HOST=${SMOKE_HOST:-}
  SMOKE_BODY=${SMOKE_BODY:-}
  SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-10}
  OVERRIDE_HEADER=${OVERRIDE_HEADER:-x-switchyard-slot}
  HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-60}
  SWITCH_TIMEOUT=${SWITCH_TIMEOUT:-10}
  DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
  GUARD_TIMEOUT=${GUARD_TIMEOUT:-900}
  POLL_INTERVAL=${POLL_INTERVAL:-0.5}
  DEPLOY_STATE_DIR=${DEPLOY_STATE_DIR:-$KIT_DIR/.deploy-state}
  # Run by `bash -c` with the slot as $1 and the version as $2.
  # The profile is named even though the service is: some compose versions
  # do not enable it for `stop` of a named service.
  # shellcheck disable=SC2016
  START_SLOT=${START_SLOT:-'APP_VERSION="$2" docker compose --profile slots up -d "app-$1"'}
  # shellcheck disable=SC2016
  STOP_SLOT=${STOP_SLOT:-'docker compose --profile slots stop "app-$1"'}

  # Unset: the CLI inside the compose service (no switchyard binary needed
  # on the host, and it runs as the server's own user, which the admin
  # socket always admits). Set: the path of a switchyard binary.
  if [[ -n ${SWITCHYARD:-} ]]; then
    SY=("$SWITCHYARD")
  else
    SY=(docker compose exec -T switchyard switchyard)
  fi
  SOCKET_ARGS=()
  if [[ -n ${SWITCHYARD_SOCKET:-} ]]; then
    SOCKET_ARGS=(--socket "$SWITCHYARD_SOCKET")
  fi

  local tool name
  for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || fail "$EXIT_USAGE" "$tool is not installed (these scripts need curl and jq)"
  done
  for name in HEALTH_TIMEOUT SWITCH_TIMEOUT DRAIN_TIMEOUT SMOKE_TIMEOUT; do
    [[ ${!name} =~ ^[1-9][0-9]*$ ]] || fail "$EXIT_USAGE" "$name must be a whole number of seconds, not '${!name}'"
  done
  [[ $POLL_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "$EXIT_USAGE" "POLL_INTERVAL must be a number of seconds, not '$POLL_INTERVAL'"
  [[ $SMOKE_EXPECT =~ ^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$ ]] || fail "$EXIT_USAGE" "SMOKE_EXPECT must be a status (200) or a range (200-399), not '$SMOKE_EXPECT'"
  [[ $SMOKE_PATH == /* ]] || fail "$EXIT_USAGE" "SMOKE_PATH must start with /, not '$SMOKE_PATH'"
  # Unset is a mistake (the smoke test would silently reach the active
  # slot); empty is a choice, for routes whose override_cidrs admit us.
  [[ -v OVERRIDE_TOKEN ]] || fail "$EXIT_USAGE" "OVERRIDE_TOKEN is not set: set it to the route's [route.preview] override_token (or to '' when its override_cidrs admit this machine)"

  mkdir -p -- "$DEPLOY_STATE_DIR" 2>/dev/null || fail "$EXIT_USAGE" "cannot create DEPLOY_STATE_DIR $DEPLOY_STATE_DIR"
  TMP=$(mktemp -d) || fail "$EXIT_USAGE" "cannot create a temporary directory"
  trap on_exit EXIT
  trap 'on_signal INT' INT
  trap 'on_signal TERM' TERM

  # Two pipelines moving one route at once would undo each other. fd 9 is
  # closed for the hooks, so a started app does not keep the lock.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$DEPLOY_STATE_DIR/$ROUTE.lock"
    flock -n 9 || fail "$EXIT_USAGE" "another deploy or rollback of route $ROUTE is running (lock $DEPLOY_STATE_DIR/$ROUTE.lock)"
  fi
}

on_signal() {
  FAIL_CODE=$EXIT_UNEXPECTED
  say "FAILED at $STAGE: interrupted by SIG$1"
  exit "$EXIT_UNEXPECTED"
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)) && [[ -z $FAIL_CODE ]]; then
    say "FAILED at $STAGE: unexpected error (a command exited $rc)"
    rc=$EXIT_UNEXPECTED
  fi
  if ((rc != 0)); then
    if ((SWITCHED)); then
      say "traffic IS on $NEW ($VERSION): the switch was made; $OLD is left as it is"
    elif ((NEW_STARTED)); then
      stop_new_again
    else
      say "nothing was changed"
    fi
  fi
  [[ -z $TMP ]] || rm -rf -- "$TMP"
  exit "$rc"
}

# Cleanup after a failure before the switch. It never stops the slot that
# has traffic: a switch interrupted mid-way may have gone through.
stop_new_again() {
  if read_route; then
    if [[ $(jq -r .active <<<"$ROUTE_JSON") == "$NEW" ]]; then
      SWITCHED=1
      say "traffic IS on $NEW ($VERSION): the switch went through; $OLD is left running"
      return
    fi
  elif [[ $STAGE == switch ]]; then
    say "cannot tell where traffic is ($STATUS_ERROR): $NEW and $OLD are both left running"
    return
  fi
  if run_hook STOP_SLOT "$NEW" "$VERSION"; then
    say "cleanup: $NEW stopped again; traffic untouched on $OLD"
  else
    say "cleanup: STOP_SLOT failed for $NEW: stop it by hand; traffic untouched on $OLD"
  fi
}

# The switchyard CLI, with --socket when SWITCHYARD_SOCKET is set.
sy() {
  "${SY[@]}" "$@" ${SOCKET_ARGS[@]+"${SOCKET_ARGS[@]}"}
}

# Sets ROUTE_JSON to the route's object in `switchyard status ROUTE --json`,
# or STATUS_ERROR to why it cannot, and returns 1.
read_route() {
  local out rc=0
  out=$(sy status "$ROUTE" --json 2>"$TMP/status.err") || rc=$?
  if ((rc == 0)) && ROUTE_JSON=$(jq -ce --arg r "$ROUTE" '.result.routes[] | select(.name == $r)' <<<"$out" 2>/dev/null); then
    return 0
  fi
  STATUS_ERROR=$(jq -r '.error.message // empty' <<<"$out" 2>/dev/null || true)
  if [[ -z $STATUS_ERROR ]]; then
    STATUS_ERROR=$(one_line <"$TMP/status.err")
  fi
  STATUS_ERROR=${STATUS_ERROR:-switchyard status exited $rc}
  return 1
}

# Reads the route and refuses what a blue/green cutover must not run over:
# a canary with weight, a rollout under way, a held config switch.
read_quiet_route() {
  read_route || fail "$EXIT_USAGE" "cannot read route $ROUTE from switchyard: $STATUS_ERROR"
  local busy
  busy=$(jq -r '[
      (select((.canary.weight // 0) > 0) | "a canary on \(.canary.slot) at \(.canary.weight) %"),
      (select(.rollout != null and .rollout.outcome == null) | "a rollout of \(.rollout.slot)"),
      (select(.pending != null) | "a config switch to \(.pending) held until it is healthy")
    ] | join(", ")' <<<"$ROUTE_JSON")
  [[ -z $busy ]] || fail "$EXIT_USAGE" "route $ROUTE has $busy: finish or end it first"
}

# Fails unless the route has a slot named $1.
require_slot() {
  jq -e --arg s "$1" 'any(.slots[]; .name == $s)' <<<"$ROUTE_JSON" >/dev/null ||
    fail "$EXIT_USAGE" "route $ROUTE has no slot $1 (it has $(jq -r '[.slots[].name] | join(", ")' <<<"$ROUTE_JSON"))"
}

# Runs the START_SLOT or STOP_SLOT command with the slot and version as $1
# and $2 (and as SLOT and VERSION in its environment). Its output goes to
# stderr, and the lock on fd 9 is not passed on to what it starts.
run_hook() {
  local hook=$1 slot=$2 version=$3
  SLOT=$slot VERSION=$version bash -c "${!hook}" "$hook" "$slot" "$version" >&2 9>&-
}

# `healthy`, `unhealthy` or `unknown`: slot $1 in the last ROUTE_JSON.
slot_health() {
  jq -r --arg s "$1" '.slots[] | select(.name == $s) | .health' <<<"$ROUTE_JSON"
}

# Each backend of slot $1 with its state and last check, for messages.
describe_slot() {
  jq -r --arg s "$1" '.slots[] | select(.name == $s) | .backends | map(
      "\(.address) \(.state)" + (
        if .last_check == null then " (no check yet)"
        elif .last_check.ok then ""
        elif .last_check.error then " (\(.last_check.error))"
        else " (status \(.last_check.status))" end)
    ) | join("; ")' <<<"$ROUTE_JSON"
}

# Polls switchyard until slot $1 is `healthy`, or `down` (anything but
# healthy), for at most HEALTH_TIMEOUT seconds.
wait_for_slot() {
  local slot=$1 want=$2 health deadline=$((SECONDS + HEALTH_TIMEOUT))
  while :; do
    if read_route; then
      health=$(slot_health "$slot")
      if [[ $want == healthy && $health == healthy ]] || [[ $want == down && $health != healthy ]]; then
        return 0
      fi
    fi
    ((SECONDS < deadline)) || return 1
    sleep "$POLL_INTERVAL"
  done
}

# Starts version $2 in slot $1 and waits until switchyard's health checks
# pass. The slot is stopped first and switchyard must see it down before the
# start: a `healthy` left over from what ran there before would let the
# smoke test meet a closed port.
bring_up() {
  local slot=$1 version=$2 began=$SECONDS
  STAGE=start
  NEW_STARTED=1
  run_hook STOP_SLOT "$slot" "$version" || fail "$EXIT_UNHEALTHY" "STOP_SLOT failed (exit $?) clearing $slot before the start"
  wait_for_slot "$slot" down ||
    fail "$EXIT_UNHEALTHY" "$slot still passes health checks ${HEALTH_TIMEOUT}s after STOP_SLOT: something else answers there ($(describe_slot "$slot"))"
  run_hook START_SLOT "$slot" "$version" || fail "$EXIT_UNHEALTHY" "START_SLOT failed (exit $?) for $version in $slot"
  say "start: $version started in $slot"

  STAGE=health
  began=$SECONDS
  if ! wait_for_slot "$slot" healthy; then
    if read_route; then
      fail "$EXIT_UNHEALTHY" "$slot not healthy after ${HEALTH_TIMEOUT}s: $(describe_slot "$slot")"
    fi
    fail "$EXIT_UNHEALTHY" "$slot not healthy after ${HEALTH_TIMEOUT}s (status: $STATUS_ERROR)"
  fi
  say "health: $slot healthy in switchyard's checks after $((SECONDS - began))s"
}

# GET FRONT_URL + SMOKE_PATH through the front door, sent to slot $1 by
# the override header; the status must match SMOKE_EXPECT and the body
# contain SMOKE_BODY ({version} and {slot} replaced by $2 and $1).
smoke_test() {
  local slot=$1 version=$2 url=$FRONT_URL$SMOKE_PATH response code body low high want
  STAGE=smoke
  local args=(--silent --show-error --max-time "$SMOKE_TIMEOUT" --write-out '\n%{http_code}'
    --header "$OVERRIDE_HEADER: $slot")
  if [[ -n $SMOKE_HOST ]]; then
    args+=(--header "Host: $SMOKE_HOST")
  fi
  if [[ -n $OVERRIDE_TOKEN ]]; then
    # From a file, not the command line, so `ps` does not show the token.
    (
      umask 077
      printf 'x-switchyard-token: %s\n' "$OVERRIDE_TOKEN" >"$TMP/token-header"
    )
    args+=(--header "@$TMP/token-header")
  fi
  response=$(curl "${args[@]}" "$url") || fail "$EXIT_SMOKE" "no answer from $url (curl exit $?)"
  code=${response##*$'\n'}
  body=${response%$'\n'*}
  low=${SMOKE_EXPECT%-*}
  high=${SMOKE_EXPECT#*-}
  if ((code < low || code > high)); then
    fail "$EXIT_SMOKE" "GET $url as $slot answered $code, expected $SMOKE_EXPECT: $(head -c 200 <<<"$body" | one_line)"
  fi
  if [[ -n $SMOKE_BODY ]]; then
    local version_tag='{version}' slot_tag='{slot}'
    want=${SMOKE_BODY//"$version_tag"/"$version"}
    want=${want//"$slot_tag"/"$slot"}
    [[ $body == *"$want"* ]] ||
      fail "$EXIT_SMOKE" "GET $url as $slot answered $code without '$want' in the body: $(head -c 200 <<<"$body" | one_line)"
  fi
  if [[ -n $SMOKE_BODY ]]; then
    say "smoke: GET $url as $slot answered $code with \"$want\""
  else
    say "smoke: GET $url as $slot answered $code"
  fi
}

# Switches the route to slot $1 with reason $2. When the command fails, the
# route's status says whether traffic moved.
cut_over() {
  local slot=$1 reason=$2 out rc=0 why active
  STAGE=switch
  out=$(sy switch "$ROUTE" "$slot" --timeout "${SWITCH_TIMEOUT}s" --reason "$reason" --json 2>"$TMP/switch.err") || rc=$?
  if ((rc == 0)); then
    SWITCHED=1
    say "switch: route $ROUTE now on $slot (was $OLD; generation $(jq -r '.result.generation' <<<"$out"))"
    return
  fi
  why=$(jq -r '.error.message // empty' <<<"$out" 2>/dev/null || true)
  why=${why:-$(one_line <"$TMP/switch.err")}
  if ! read_route; then
    NEW_STARTED=0 # it may have traffic: leave it running
    fail "$EXIT_UNEXPECTED" "switch failed ($why), and switchyard's status cannot be read ($STATUS_ERROR): traffic may be on $OLD or $slot; both are left running"
  fi
  active=$(jq -r .active <<<"$ROUTE_JSON")
  if [[ $active == "$slot" ]]; then
    SWITCHED=1
    say "switch: the command failed ($why), but route $ROUTE is on $slot: carrying on"
    return
  fi
  fail "$EXIT_SWITCH" "switch to $slot refused: $why"
}

# Waits for switchyard's guard window on slot $1, the new active slot, to
# end, while OLD keeps running: a breach fails back to a warm OLD in
# milliseconds. Returns when the guard passed (or when there is none); a
# rollback by the guard ends the run with EXIT_GUARD, and the new version
# is stopped again like after any failure before the switch.
await_guard() {
  local slot=$1 active guard deadline=$((SECONDS + GUARD_TIMEOUT)) began=$SECONDS
  STAGE=guard
  while :; do
    if read_route; then
      active=$(jq -r .active <<<"$ROUTE_JSON")
      guard=$(jq -r '.guard.slot // empty' <<<"$ROUTE_JSON")
      if [[ $active != "$slot" ]]; then
        SWITCHED=0
        FAIL_CODE=$EXIT_GUARD
        # Traffic is off the new version again: the EXIT trap stops it.
        say "FAILED at guard: traffic went back to $active after $((SECONDS - began))s: $(last_reason)"
        exit "$EXIT_GUARD"
      fi
      if [[ $guard != "$slot" ]]; then
        say "guard: $slot passed after $((SECONDS - began))s ($(last_reason))"
        return
      fi
    fi
    ((SECONDS < deadline)) ||
      fail "$EXIT_UNEXPECTED" "the guard on $slot still runs after ${GUARD_TIMEOUT}s (GUARD_TIMEOUT); $OLD is left running"
    sleep "$POLL_INTERVAL"
  done
}

# The reason of the route's newest history entry, for messages.
last_reason() {
  sy history "$ROUTE" --limit 1 --json 2>/dev/null |
    jq -r '.result.entries[-1] | "\(.action): \(.reason // .result)"' 2>/dev/null || echo "see switchyard history"
}

# Waits until slot $1 has nothing in flight, then stops it.
retire() {
  local slot=$1 out
  STAGE=drain
  out=$(sy drain "$ROUTE" "$slot" --wait --timeout "${DRAIN_TIMEOUT}s" 2>&1) ||
    fail "$EXIT_DRAIN" "$slot did not drain within ${DRAIN_TIMEOUT}s ($(one_line <<<"$out")) — traffic IS on $NEW; $slot is left running"
  say "drain: $slot idle ($(one_line <<<"$out"))"
  STAGE=stop
  run_hook STOP_SLOT "$slot" "$(recorded_version "$slot")" ||
    fail "$EXIT_STOP" "STOP_SLOT failed (exit $?) for $slot — traffic IS on $NEW; $slot is drained but still running"
  say "stop: $slot stopped"
}

# The version the last successful cutover put in slot $1, if any.
recorded_version() {
  local file=$DEPLOY_STATE_DIR/$ROUTE.$1.version
  if [[ -r $file ]]; then
    head -n 1 -- "$file"
  fi
}

# Notes that slot $1 now serves version $2, for a later rollback.sh.
record_version() {
  printf '%s\n' "$2" >"$DEPLOY_STATE_DIR/$ROUTE.$1.version" ||
    say "warning: could not record $2 for $1 in $DEPLOY_STATE_DIR"
}
