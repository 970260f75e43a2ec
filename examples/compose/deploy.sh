#!/usr/bin/env bash
# deploy.sh [--no-wait] VERSION: a blue/green deploy of VERSION behind
# switchyard.
#
#   start VERSION in the inactive slot → wait until switchyard's health
#   checks pass → smoke-test it through the front door (override header) →
#   switch → wait for switchyard's guard window to pass, the old slot still
#   running (a breach fails back to it at once) → drain the old slot → stop it
#
# --no-wait returns right after the switch, exit 0, and leaves the old slot
# running: the guard can still fail back to it, and the next deploy stops it
# before it starts the next version there.
#
# Nothing before the switch touches traffic: a failure there stops the new
# slot again. One line per stage goes to stderr. Settings come from the
# environment, with defaults for docker-compose.yml beside this script
# (README.md lists them); it runs from any working directory.
#
# Exit codes, for CI:
#   0  deployed: traffic is on VERSION, the old slot drained and stopped
#   1  unexpected error or interrupted; the last line says where traffic is
#   2  usage, settings or route state (canary, rollout, held switch, lock):
#      nothing was changed
#   3  the new version did not start or never turned healthy: it is stopped
#      again, traffic untouched
#   4  smoke test failed: the new version is stopped again, traffic untouched
#   5  switch refused: the new version is stopped again, traffic untouched
#   6  drain timed out: traffic IS on the new version; the old slot is left
#      running
#   7  the old slot could not be stopped: traffic IS on the new version; the
#      old slot is drained but running
#   8  the guard rolled back: traffic is on the old version again (it was
#      kept running for this); the new version is stopped again
set -euo pipefail

# shellcheck source=cutover.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/cutover.sh"

usage() {
  cat <<'USAGE'
usage: deploy.sh [--no-wait] VERSION
Deploys VERSION to the inactive slot of $ROUTE (default app) and switches
traffic to it. Exit codes and settings: the comment atop this script and
README.md beside it.
USAGE
}

WAIT_GUARD=1
case ${1:-} in
-h | --help)
  usage
  exit 0
  ;;
--no-wait)
  WAIT_GUARD=0
  shift
  ;;
esac
if [[ $# -ne 1 || -z $1 || $1 == -* ]]; then
  usage >&2
  exit "$EXIT_USAGE"
fi
VERSION=$1

cutover_setup deploy
read_quiet_route
OLD=$(jq -r .active <<<"$ROUTE_JSON")
read -r -a pair <<<"$SLOTS"
if [[ ${#pair[@]} -ne 2 ]]; then
  fail "$EXIT_USAGE" "SLOTS must name two slots, not '$SLOTS'"
fi
case $OLD in
"${pair[0]}") NEW=${pair[1]} ;;
"${pair[1]}") NEW=${pair[0]} ;;
*) fail "$EXIT_USAGE" "route $ROUTE is on $OLD, which is not one of SLOTS ($SLOTS)" ;;
esac
require_slot "$NEW"
say "preflight: route $ROUTE is on $OLD; deploying $VERSION to $NEW"

bring_up "$NEW" "$VERSION"
smoke_test "$NEW" "$VERSION"
cut_over "$NEW" "deploy $VERSION to $NEW${REASON:+: $REASON}"
record_version "$NEW" "$VERSION"
if ((!WAIT_GUARD)); then
  STAGE='done'
  say "done: $VERSION is live on $NEW; $OLD is left running for the guard (the next deploy stops it)"
  exit 0
fi
await_guard "$NEW"
retire "$OLD"
STAGE='done'
say "done: $VERSION is live on $NEW and passed its guard; $OLD is stopped"
