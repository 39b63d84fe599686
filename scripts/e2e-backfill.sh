#!/usr/bin/env bash
# End-to-end check of `profilestore backfill` against a locally built
# Dendrite (not run in CI; docs/APPSERVICE.md records what was run). Beside
# scripts/e2e-homeserver.sh (mirror mode), with its own ports and directory.
#
# Before profilestore is registered, users and rooms get a history through
# the homeserver: joins, a global rename (Dendrite writes it into every
# room), a per-room nickname, an invite, a kick, a ban, an unban, a leave,
# history visibility and power-level changes. Then profilestore is
# registered and mirror mode starts; live events come in (a new member, a
# rejoin); a backfill is started on the running server (admin route, rate
# limited so that it takes a while) and, while it runs, a room is created
# and joined. Afterwards a live global rename. Every room's profilestore
# history (memberships and names, in order, old and new values) is compared
# with the homeserver's timeline of member events, and its members with
# /joined_members. The homeserver's answers to the backfill's calls are kept
# as a replay fixture ($WORK/backfill-fixture.json; see
# appservice/testdata/dendrite-v0.15.2-backfill.json). Last, with the server
# stopped, `profilestore backfill` runs again on a new checkpoint and must
# append nothing. Exits 1 on a mismatch.
#
# Needs go, curl, jq, openssl, python3 with PyYAML.
#   DENDRITE_VERSION (v0.15.2), BIN (binaries; an existing $BIN/dendrite is
#   reused), WORK (kept afterwards; default a new /tmp/ps-backfill.XXXXXX),
#   HS_PORT (18108), PS_PORT (18180).
set -euo pipefail

DENDRITE_VERSION=${DENDRITE_VERSION:-v0.15.2}
WORK=${WORK:-$(mktemp -d /tmp/ps-backfill.XXXXXX)}
BIN=${BIN:-$WORK/bin}
HS_PORT=${HS_PORT:-18108}
PS_PORT=${PS_PORT:-18180}
HS=http://127.0.0.1:$HS_PORT
PS=http://127.0.0.1:$PS_PORT
SERVER_NAME=localhost
SECRET=e2e-shared-secret
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export GOFLAGS=${GOFLAGS:--p=2}
mkdir -p "$WORK" "$BIN"

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  local rc=$?
  stop_all
  echo "logs: $WORK/dendrite.log $WORK/profilestore.log"
  exit "$rc"
}
trap cleanup EXIT INT TERM
log() { printf '\n== %s\n' "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }
fail=0
mismatch() { echo "MISMATCH: $*"; fail=1; }
echo "work directory: $WORK"
for tool in go curl jq openssl python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done
python3 -c 'import yaml' 2>/dev/null || die "python3 needs PyYAML (pip install pyyaml)"

# 1. Build (Dendrite through the Go module proxy, as scripts/e2e-homeserver.sh does).
if [ ! -x "$BIN/dendrite" ] || [ ! -x "$BIN/generate-config" ] || [ ! -x "$BIN/generate-keys" ]; then
  log "building Dendrite $DENDRITE_VERSION"
  mod="$WORK/dendrite-build"; mkdir -p "$mod"
  (cd "$mod" && rm -f go.mod go.sum && go mod init e2e/dendrite-build >/dev/null 2>&1 &&
    go get "github.com/element-hq/dendrite@$DENDRITE_VERSION" &&
    go build -mod=mod -o "$BIN/" github.com/element-hq/dendrite/cmd/dendrite \
      github.com/element-hq/dendrite/cmd/generate-keys github.com/element-hq/dendrite/cmd/generate-config)
fi
log "building profilestore"
(cd "$ROOT" && go build -o "$BIN/profilestore" ./cmd/profilestore)

# 2. Dendrite without profilestore (SQLite, no federation).
"$BIN/generate-keys" --private-key "$WORK/matrix_key.pem" >/dev/null
mkdir -p "$WORK/dendrite"
"$BIN/generate-config" -dir "$WORK/dendrite" -server "$SERVER_NAME" > "$WORK/dendrite.yaml"
dendrite_config() { # appservice registration file or "" -> edits dendrite.yaml
  python3 - "$WORK" "$SECRET" "$1" <<'PY'
import sys, yaml
work, secret, reg = sys.argv[1], sys.argv[2], sys.argv[3]
path = work + "/dendrite.yaml"
c = yaml.safe_load(open(path))
c["global"]["private_key"] = work + "/matrix_key.pem"
c["global"]["disable_federation"] = True
c["federation_api"]["key_perspectives"] = []
c["global"].setdefault("report_stats", {})["enabled"] = False
c["app_service_api"]["config_files"] = [reg] if reg else []
c["client_api"]["registration_shared_secret"] = secret
c["client_api"]["rate_limiting"]["enabled"] = False
c["user_api"]["bcrypt_cost"] = 4
c["logging"] = [{"type": "std", "level": "info"}]
yaml.safe_dump(c, open(path, "w"), sort_keys=False)
PY
}
wait_for() {
  for _ in $(seq 120); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done
  die "$1 did not answer within 60 s"
}
start_dendrite() {
  (cd "$WORK/dendrite" && exec "$BIN/dendrite" --config "$WORK/dendrite.yaml" \
    --http-bind-address "127.0.0.1:$HS_PORT" --https-bind-address 127.0.0.1:0) >> "$WORK/dendrite.log" 2>&1 &
  pids+=($!)
  wait_for "$HS/_matrix/client/versions"
}
dendrite_config ""
log "starting Dendrite on $HS, without profilestore"
start_dendrite

register() { # localpart -> access token
  local nonce mac pw="pw-$1-123456"
  nonce=$(curl -sf "$HS/_synapse/admin/v1/register" | jq -r .nonce)
  mac=$(printf '%s\0%s\0%s\0%s' "$nonce" "$1" "$pw" notadmin | openssl dgst -sha1 -hmac "$SECRET" | awk '{print $NF}')
  curl -sf -XPOST "$HS/_synapse/admin/v1/register" \
    -d "$(jq -nc --arg n "$nonce" --arg u "$1" --arg p "$pw" --arg m "$mac" '{nonce:$n,username:$u,password:$p,mac:$m,admin:false}')" |
    jq -r .access_token
}
api() { # token method path [body]
  local tok=$1 method=$2 path=$3 body=${4:-}
  curl -sf -X "$method" -H "Authorization: Bearer $tok" "$HS/_matrix/client/v3$path" ${body:+-d "$body"}
}
enc() { jq -rn --arg s "$1" '$s|@uri'; }
name() { api "$1" PUT "/profile/$(enc "$2")/displayname" "$(jq -nc --arg n "$3" '{displayname:$n}')" >/dev/null; }
join() { api "$1" POST "/join/$(enc "$2")" '{}' >/dev/null; }
act() { # token room verb user
  api "$1" POST "/rooms/$(enc "$2")/$3" "$(jq -nc --arg u "$4" '{user_id:$u, reason:"e2e"}')" >/dev/null
}
state() { api "$1" PUT "/rooms/$(enc "$2")/state/$3" "$4" >/dev/null; }
tick() { sleep 0.05; } # distinct origin_server_ts between steps

ALICE=@alice:$SERVER_NAME BOB=@bob:$SERVER_NAME CAROL=@carol:$SERVER_NAME DAVE=@dave:$SERVER_NAME
log "the past: users and rooms with a history, before profilestore is registered"
A=$(register alice); B=$(register bob); C=$(register carol); D=$(register dave); ADM=$(register psadmin)
name "$A" "$ALICE" Alice; name "$B" "$BOB" Bob; name "$C" "$CAROL" Carol; name "$D" "$DAVE" Dave
R1=$(api "$A" POST /createRoom '{"preset":"public_chat","name":"backfill one"}' | jq -r .room_id); tick
R2=$(api "$A" POST /createRoom '{"preset":"public_chat","name":"backfill two"}' | jq -r .room_id); tick
join "$B" "$R1"; tick; join "$B" "$R2"; tick
name "$A" "$ALICE" "Alice Renamed"; sleep 0.5                              # a global rename: both rooms
state "$A" "$R1" "m.room.member/$(enc "$ALICE")" '{"membership":"join","displayname":"Captain Alice"}'; tick   # R1 only
act "$A" "$R1" invite "$CAROL"; tick; join "$C" "$R1"; tick
act "$A" "$R1" kick "$CAROL"; tick; act "$A" "$R1" ban "$CAROL"; tick; act "$A" "$R1" unban "$CAROL"; tick
state "$A" "$R1" m.room.history_visibility '{"history_visibility":"joined"}'; tick
pl=$(api "$A" GET "/rooms/$(enc "$R1")/state/m.room.power_levels")
state "$A" "$R1" m.room.power_levels "$(jq -c --arg u "$BOB" '.users[$u]=50' <<<"$pl")"; tick
name "$B" "$BOB" "Bob Renamed"; sleep 0.5                                  # bob's rename: R1 and R2
api "$B" POST "/rooms/$(enc "$R2")/leave" '{}' >/dev/null; tick
echo "R1=$R1 R2=$R2"

# 3. Register profilestore; restart Dendrite with it; serve with mirror mode.
cat > "$WORK/profilestore.yaml" <<YAML
data_dir: $WORK/ps
listen: 127.0.0.1:$PS_PORT
log_level: debug
log_format: json
auth: {mode: homeserver, homeserver_url: $HS, admins: ["@psadmin:$SERVER_NAME"]}
appservice:
  enabled: true
  server_name: $SERVER_NAME
  backfill: {requests_per_second: 4, page_size: 3}   # slow, so that live events arrive meanwhile
YAML
"$BIN/profilestore" -c "$WORK/profilestore.yaml" appservice register \
  --server-name "$SERVER_NAME" --url "$PS" > "$WORK/registration.yaml" 2>/dev/null
AS_TOKEN=$(awk '/^as_token:/ {print $2}' "$WORK/registration.yaml" | tr -d '"')
log "registering profilestore with Dendrite (restart) and starting mirror mode"
stop_all
dendrite_config "$WORK/registration.yaml"
start_dendrite
"$BIN/profilestore" -c "$WORK/profilestore.yaml" serve > "$WORK/profilestore.log" 2>&1 &
pids+=($!)
PS_PID=$!
wait_for "$PS/health"
psc() { curl -sf -H "Authorization: Bearer $1" "$PS$2"; }

log "live events (mirror mode): dave joins R1, carol rejoins R1"
join "$D" "$R1"; tick; join "$C" "$R1"; sleep 1

log "backfill on the running server; meanwhile alice creates R3 and dave joins it"
curl -sf -XPOST -H "Authorization: Bearer $ADM" "$PS/_profilestore/v1/backfill" \
  -d "$(jq -nc --arg a "$ALICE" --arg b "$BOB" --arg c "$CAROL" '{users:[$a,$b,$c]}')" | jq -c '{started}'
R3=$(api "$A" POST /createRoom '{"preset":"public_chat","name":"made during the backfill"}' | jq -r .room_id)
join "$D" "$R3"
running_seen=$(psc "$ADM" /_profilestore/v1/backfill | jq -r .running)
echo "R3=$R3 (backfill running while it was made: $running_seen)"
for _ in $(seq 600); do [ "$(psc "$ADM" /_profilestore/v1/backfill | jq -r .running)" = false ] && break; sleep 0.2; done
psc "$ADM" /_profilestore/v1/backfill > "$WORK/backfill-status.json"
jq -c '.report | {rooms, done, events, recorded, unreadable, incomplete, users}' "$WORK/backfill-status.json"
[ -z "$(jq -r '.error // empty' "$WORK/backfill-status.json")" ] || mismatch "the backfill stopped: $(jq -r .error "$WORK/backfill-status.json")"
[ "$(jq -r '.report.done' "$WORK/backfill-status.json")" = 3 ] || mismatch "the backfill did not finish every room"
curl -sf "$PS/metrics" | grep '^profilestore_backfill' | sed 's/^/   /'

log "a live global rename after the backfill"
name "$A" "$ALICE" "Alice Final"; sleep 1.5

# 4. Compare. The homeserver's member events, oldest first, as alice reads
# them (joined everywhere from the start), by Matrix's m.room.member table:
# user<TAB>kind<TAB>old->new (names for joins, invites and name changes).
hs_lines() {
  api "$A" GET "/rooms/$(enc "$1")/messages?dir=b&limit=1000&filter=$(enc '{"types":["m.room.member"],"lazy_load_members":false}')" |
    jq -r '[.chunk[]] | reverse | reduce .[] as $e ({st: {}, out: []};
      ($e.state_key) as $u | ($e.content.membership) as $m | ($e.content.displayname // "") as $n |
      (.st[$u] // {m: "leave", n: ""}) as $p |
      (if $m == "join" then (if $p.m == "join" then (if $p.n != $n then ["name\t\($p.n)->\($n)"] else [] end) else ["join\t->\($n)"] end)
       elif $m == "invite" then (if $p.m == "invite" then [] else ["invite\t->\($n)"] end)
       elif $m == "leave" then (if $p.m == "leave" then [] elif $p.m == "ban" then ["unban\t"] elif $e.sender == $u then ["leave\t"] else ["kick\t"] end)
       elif $m == "ban" then (if $p.m == "ban" then [] else ["ban\t"] end)
       else [] end) as $ks |
      .out += [$ks[] | "\($u)\t\(.)"] |
      .st[$u] = {m: $m, n: (if ($m == "join" or $m == "invite") then $n else "" end)}) | .out[]'
}
ps_lines() {
  psc "$ADM" "/_profilestore/v1/rooms/$(enc "$1")/history?dir=f&limit=1000" |
    jq -r '.chunk[] | select(.field != "avatar_url") |
      (if (.kind | IN("global_rename", "room_rename", "override_cleared")) then "name\t\(.old.displayname // "")->\(.new.displayname // "")"
       elif (.kind | IN("join", "invite")) then "\(.kind)\t->\(.new.displayname // "")"
       else "\(.kind)\t" end) as $k | "\(.user_id)\t\($k)"'
}
label() { case "$1" in "$R1") echo R1 ;; "$R2") echo R2 ;; "$R3") echo R3 ;; esac; }
for r in "$R1" "$R2" "$R3"; do
  log "$(label "$r"): history, homeserver | profilestore"
  hs_lines "$r" > "$WORK/hs-$(label "$r").tsv"; ps_lines "$r" > "$WORK/ps-$(label "$r").tsv"
  paste -d'|' "$WORK/hs-$(label "$r").tsv" "$WORK/ps-$(label "$r").tsv" | sed 's/^/   /'
  cmp -s "$WORK/hs-$(label "$r").tsv" "$WORK/ps-$(label "$r").tsv" || mismatch "$(label "$r")'s history differs from the homeserver's timeline"
  hs_members=$(api "$A" GET "/rooms/$(enc "$r")/joined_members" | jq -r '.joined | to_entries[] | "\(.key)\t\(.value.display_name // "")"' | sort)
  ps_members=$(psc "$ADM" "/_profilestore/v1/rooms/$(enc "$r")/members" | jq -r '.members[] | select(.membership == "join") | "\(.user_id)\t\(.displayname // "")"' | sort)
  [ "$hs_members" = "$ps_members" ] || mismatch "$(label "$r")'s members: homeserver [$hs_members] profilestore [$ps_members]"
done

# 5. The homeserver's answers to the backfill's calls, for the replay fixture.
log "capturing the homeserver's answers ($WORK/backfill-fixture.json)"
as() { curl -sf -H "Authorization: Bearer $AS_TOKEN" "$HS/_matrix/client/v3$1"; }
filter='{"types":["m.room.create","m.room.member","m.room.history_visibility","m.room.power_levels"],"lazy_load_members":false}'
{
  echo '{"server_name":"localhost","joined_rooms":{'
  first=1
  for u in "$ALICE" "$BOB" "$CAROL"; do
    [ $first = 1 ] || echo ','; first=0
    printf '%s:' "$(jq -nc --arg u "$u" '$u')"; as "/joined_rooms?user_id=$(enc "$u")"
  done
  echo '},"timelines":{'
  first=1
  for r in "$R1" "$R2" "$R3"; do
    [ $first = 1 ] || echo ','; first=0
    printf '%s:' "$(jq -nc --arg r "$r" '$r')"
    as "/rooms/$(enc "$r")/messages?dir=f&from=t0_0&limit=1000&user_id=$(enc "$ALICE")&filter=$(enc "$filter")" | jq -c .chunk
  done
  echo '},"expected":{'
  first=1
  for r in "$R1" "$R2" "$R3"; do
    [ $first = 1 ] || echo ','; first=0
    printf '%s:' "$(jq -nc --arg r "$r" '$r')"; jq -Rsc 'split("\n") | map(select(. != ""))' "$WORK/hs-$(label "$r").tsv"
  done
  echo '}}'
} | jq . > "$WORK/backfill-fixture.json"

# 6. Again from the command line, server stopped, on a new checkpoint:
# everything is read again and nothing appended.
log "profilestore backfill again (command line, a new checkpoint): nothing new"
kill "$PS_PID"; wait "$PS_PID" 2>/dev/null || true
before=$("$BIN/profilestore" -c "$WORK/profilestore.yaml" export 2>/dev/null | wc -l)
rm -f "$WORK/ps/backfill.db"
"$BIN/profilestore" -c "$WORK/profilestore.yaml" backfill --user "$ALICE" --user "$BOB" --user "$CAROL" --json 2>"$WORK/backfill-cli.log" |
  tee "$WORK/backfill-cli.json" | jq -c '{rooms, done, events, recorded}'
after=$("$BIN/profilestore" -c "$WORK/profilestore.yaml" export 2>/dev/null | wc -l)
echo "events in the log: $before before, $after after"
[ "$before" = "$after" ] || mismatch "a second backfill appended $((after - before)) events"
[ "$(jq -r .recorded "$WORK/backfill-cli.json")" = 0 ] || mismatch "a second backfill recorded changes"

[ "$fail" = 0 ] || die "profilestore's history differs from Dendrite's after the backfill"
echo
echo "PASS: after the backfill, profilestore's rooms agree with Dendrite $DENDRITE_VERSION"
