#!/usr/bin/env bash
# rollback.sh [VERSION]: puts a route back on its previous slot, the way
# deploy.sh moved it off.
#
#   start the previous slot again (with VERSION, else the version the last
#   deploy to it recorded) → wait until switchyard's health checks pass →
#   smoke-test it through the front door → switch → drain the current slot
#   → stop it
#
# Nothing before the switch touches traffic: a failure there stops the
# previous slot again. One line per stage goes to stderr. Settings as for
# deploy.sh (README.md beside this script); it runs from any directory.
#
# Exit codes, for CI:
#   0  rolled back: traffic is on the previous slot, the other one drained
#      and stopped
#   1  unexpected error or interrupted; the last line says where traffic is
#   2  usage, settings or route state (no previous slot, previous slot
#      failed, unknown version, canary, rollout, held switch, lock):
#      nothing was changed
#   3  the previous slot did not start or never turned healthy: it is
#      stopped again, traffic untouched
#   4  smoke test failed: the previous slot is stopped again, traffic
#      untouched
#   5  switch refused: the previous slot is stopped again, traffic untouched
#   6  drain timed out: traffic IS on the previous slot; the other one is
#      left running
#   7  the other slot could not be stopped: traffic IS on the previous
#      slot; the other one is drained but running
set -euo pipefail

# shellcheck source=cutover.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/cutover.sh"

usage() {
  cat <<'USAGE'
usage: rollback.sh [VERSION]
Puts $ROUTE (default app) back on its previous slot, started with VERSION or
else with the version deploy.sh recorded for that slot. Exit codes and
settings: the comment atop this script and README.md beside it.
USAGE
}

case ${1:-} in
-h | --help)
  usage
  exit 0
  ;;
esac
if [[ $# -gt 1 || ${1:-x} == -* || (-n ${1+x} && -z ${1:-}) ]]; then
  usage >&2
  exit "$EXIT_USAGE"
fi

cutover_setup rollback
read_quiet_route
OLD=$(jq -r .active <<<"$ROUTE_JSON")
NEW=$(jq -r '.previous // empty' <<<"$ROUTE_JSON")
if [[ -z $NEW ]]; then
  fail "$EXIT_USAGE" "route $ROUTE has no previous slot: nothing to roll back to"
fi
# After an automatic fail-back, the previous slot is the one that failed.
if [[ $(jq -r '.failed // empty' <<<"$ROUTE_JSON") == "$NEW" ]]; then
  fail "$EXIT_USAGE" "route $ROUTE already failed back from $NEW to $OLD (its health checks failed): deploy a fix instead"
fi
require_slot "$NEW"
VERSION=${1:-$(recorded_version "$NEW")}
if [[ -z $VERSION ]]; then
  fail "$EXIT_USAGE" "no version recorded for $NEW in $DEPLOY_STATE_DIR: name it, rollback.sh VERSION"
fi
say "preflight: route $ROUTE is on $OLD; rolling back to $VERSION in $NEW"

bring_up "$NEW" "$VERSION"
smoke_test "$NEW" "$VERSION"
cut_over "$NEW" "rollback to $VERSION in $NEW${REASON:+: $REASON}"
record_version "$NEW" "$VERSION"
retire "$OLD"
STAGE='done'
say "done: rolled back to $VERSION on $NEW; $OLD is stopped"
