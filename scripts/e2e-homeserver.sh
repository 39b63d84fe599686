#!/usr/bin/env bash
# End-to-end check of mirror mode against a locally built Dendrite (not run
# in CI; docs/APPSERVICE.md records what was run and what it showed).
#
# It builds Dendrite and profilestore, registers profilestore as an
# appservice, creates users alice and bob and two rooms through the
# homeserver, renames alice globally (one PUT displayname) and gives her a
# per-room nickname in one room, then compares, room by room, profilestore's
# members view with the homeserver's joined_members, and checks that
# profilestore's room histories show the joins, the global rename (once, as
# one global change) and the per-room rename. In a third room it drives
# invites (accepted, rejected, revoked), kicks, bans, unbans, leave and
# rejoin, a nickname, history visibility and power-level changes, and
# knocks (as member state: Dendrite has no /knock), and compares every
# room's membership history and states with the homeserver's timeline, and
# what history_visibility shows each non-moderator; then changes R3 while
# profilestore is stopped and checks that Dendrite's held transactions
# arrive after the restart and the rooms agree again. Then it turns moderation alerts
# on (docs/ALERTS.md): alice makes a moderation room and invites
# profilestore's bot, mallory joins R1 under a look-alike of alice's name
# (a Cyrillic А), and the bot's m.notice about it must appear in the
# moderation room, read back with /messages. Exits non-zero on a mismatch.
#
# Needs: go, curl, jq, openssl, python3 with PyYAML (to edit Dendrite's
# config). Everything listens on 127.0.0.1 only: Dendrite on $HS_PORT
# (18008), profilestore on $PS_PORT (18080). Processes it starts are stopped
# on exit.
#
#   DENDRITE_VERSION  Dendrite release (default v0.15.2)
#   BIN               where binaries go; an existing $BIN/dendrite is reused
#                     (default $WORK/bin; keep one across runs to skip the build)
#   WORK              working directory, kept afterwards: logs, databases and
#                     the transactions profilestore received (transactions.ndjson)
#                     (default a new /tmp/ps-e2e.XXXXXX)
set -euo pipefail

DENDRITE_VERSION=${DENDRITE_VERSION:-v0.15.2}
WORK=${WORK:-$(mktemp -d /tmp/ps-e2e.XXXXXX)}
BIN=${BIN:-$WORK/bin}
HS_PORT=${HS_PORT:-18008}
PS_PORT=${PS_PORT:-18080}
HS=http://127.0.0.1:$HS_PORT
PS=http://127.0.0.1:$PS_PORT
SERVER_NAME=localhost
SECRET=e2e-shared-secret
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export GOFLAGS=${GOFLAGS:--p=2}
mkdir -p "$WORK" "$BIN"

pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "logs: $WORK/dendrite.log $WORK/profilestore.log"
  exit "$rc"
}
trap cleanup EXIT INT TERM
log() { printf '\n== %s\n' "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }
echo "work directory: $WORK"

for tool in go curl jq openssl python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done
python3 -c 'import yaml' 2>/dev/null || die "python3 needs PyYAML (pip install pyyaml)"

# 1. Build both. Dendrite is built through the Go module proxy.
if [ ! -x "$BIN/dendrite" ] || [ ! -x "$BIN/generate-config" ] || [ ! -x "$BIN/generate-keys" ]; then
  log "building Dendrite $DENDRITE_VERSION (GOFLAGS=$GOFLAGS)"
  start=$(date +%s)
  # Not "go install ...@version": that also reads the module's version list
  # (for deprecations), which a restricted proxy may refuse. A throw-away
  # module pinned to the release needs only that release and its go.mod.
  mod="$WORK/dendrite-build"
  mkdir -p "$mod"
  (cd "$mod" && rm -f go.mod go.sum && go mod init e2e/dendrite-build >/dev/null 2>&1 &&
    go get "github.com/element-hq/dendrite@$DENDRITE_VERSION" &&
    go build -mod=mod -o "$BIN/" github.com/element-hq/dendrite/cmd/dendrite \
      github.com/element-hq/dendrite/cmd/generate-keys github.com/element-hq/dendrite/cmd/generate-config)
  echo "built in $(( $(date +%s) - start )) s"
fi
log "building profilestore"
(cd "$ROOT" && go build -o "$BIN/profilestore" ./cmd/profilestore)

# 2. Register profilestore; configure Dendrite (SQLite, no federation).
cat > "$WORK/profilestore.yaml" <<YAML
data_dir: $WORK/ps
listen: 127.0.0.1:$PS_PORT
log_level: trace          # trace logs each transaction body (captured below)
log_format: json
auth: {mode: homeserver, homeserver_url: $HS, admins: ["@psadmin:$SERVER_NAME"]}
appservice: {enabled: true, server_name: $SERVER_NAME}   # server_name: the alert bot's user id
YAML
"$BIN/profilestore" -c "$WORK/profilestore.yaml" appservice register \
  --server-name "$SERVER_NAME" --url "$PS" > "$WORK/registration.yaml" 2>/dev/null
"$BIN/generate-keys" --private-key "$WORK/matrix_key.pem" >/dev/null
mkdir -p "$WORK/dendrite"
"$BIN/generate-config" -dir "$WORK/dendrite" -server "$SERVER_NAME" > "$WORK/dendrite.yaml"
python3 - "$WORK" "$SECRET" <<'PY'
import sys, yaml
work, secret = sys.argv[1], sys.argv[2]
path = work + "/dendrite.yaml"
c = yaml.safe_load(open(path))
c["global"]["private_key"] = work + "/matrix_key.pem"
c["global"]["disable_federation"] = True
c["federation_api"]["key_perspectives"] = []  # never ask matrix.org for keys
c["global"].setdefault("report_stats", {})["enabled"] = False
c["app_service_api"]["config_files"] = [work + "/registration.yaml"]
c["client_api"]["registration_shared_secret"] = secret
c["client_api"]["rate_limiting"]["enabled"] = False
c["user_api"]["bcrypt_cost"] = 4
c["logging"] = [{"type": "std", "level": "info"}]
yaml.safe_dump(c, open(path, "w"), sort_keys=False)
PY

# 3. Start both; wait until they answer.
log "starting Dendrite on $HS and profilestore on $PS"
(cd "$WORK/dendrite" && exec "$BIN/dendrite" --config "$WORK/dendrite.yaml" \
  --http-bind-address "127.0.0.1:$HS_PORT" --https-bind-address 127.0.0.1:0) > "$WORK/dendrite.log" 2>&1 &
pids+=($!)
"$BIN/profilestore" -c "$WORK/profilestore.yaml" serve > "$WORK/profilestore.log" 2>&1 &
pids+=($!)
PS_PID=$!
wait_for() {
  for _ in $(seq 120); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done
  die "$1 did not answer within 60 s"
}
wait_for "$HS/_matrix/client/versions"
wait_for "$PS/health"

# 4. Users (shared-secret registration), rooms, names, all through the homeserver.
register() { # localpart password -> access token
  local nonce mac
  nonce=$(curl -sf "$HS/_synapse/admin/v1/register" | jq -r .nonce)
  mac=$(printf '%s\0%s\0%s\0%s' "$nonce" "$1" "$2" notadmin | openssl dgst -sha1 -hmac "$SECRET" | awk '{print $NF}')
  curl -sf -XPOST "$HS/_synapse/admin/v1/register" \
    -d "$(jq -nc --arg n "$nonce" --arg u "$1" --arg p "$2" --arg m "$mac" '{nonce:$n,username:$u,password:$p,mac:$m,admin:false}')" |
    jq -r .access_token
}
api() { # token method path [body]: the homeserver's client API
  local tok=$1 method=$2 path=$3 body=${4:-}
  curl -sf -X "$method" -H "Authorization: Bearer $tok" "$HS/_matrix/client/v3$path" ${body:+-d "$body"}
}
psc() { # token path: profilestore
  curl -sf -H "Authorization: Bearer $1" "$PS$2"
}
enc() { jq -rn --arg s "$1" '$s|@uri'; }
now_ms() { date +%s%3N; }

ALICE=@alice:$SERVER_NAME BOB=@bob:$SERVER_NAME
log "registering alice, bob and psadmin (profilestore admin)"
A=$(register alice pw-alice-123456); B=$(register bob pw-bob-123456); ADM=$(register psadmin pw-psadmin-123456)
for t in "$A" "$B" "$ADM"; do [ -n "$t" ] && [ "$t" != null ] || die "registration gave no access token"; done
echo "initial names (homeserver): alice=$(api "$A" GET "/profile/$(enc "$ALICE")/displayname" | jq -r .displayname)" \
  "bob=$(api "$B" GET "/profile/$(enc "$BOB")/displayname" | jq -r .displayname)"
api "$A" PUT "/profile/$(enc "$ALICE")/displayname" '{"displayname":"Alice"}' >/dev/null

log "alice creates two rooms, bob joins both"
R1=$(api "$A" POST /createRoom '{"preset":"public_chat","name":"e2e one"}' | jq -r .room_id)
R2=$(api "$A" POST /createRoom '{"preset":"public_chat","name":"e2e two"}' | jq -r .room_id)
for r in "$R1" "$R2"; do api "$B" POST "/join/$(enc "$r")" '{}' >/dev/null; done
echo "R1=$R1 R2=$R2"

# ps_name room user: the displayname profilestore's members view shows (admin).
ps_name() { psc "$ADM" "/_profilestore/v1/rooms/$(enc "$1")/members" 2>/dev/null |
  jq -r --arg u "$2" '[.members[]? | select(.user_id==$u and .membership=="join") | (.displayname // "")] | first // "<absent>"'; }
hs_name() { api "$A" GET "/rooms/$(enc "$1")/joined_members" | jq -r --arg u "$2" '.joined[$u].display_name // "<absent>"'; }
wait_ps() { # room user name: until profilestore shows it (30 s)
  for _ in $(seq 300); do [ "$(ps_name "$1" "$2")" = "$3" ] && return 0; sleep 0.1; done
  echo "profilestore still shows $2 in $1 as '$(ps_name "$1" "$2")', want '$3'"; return 1
}
for r in "$R1" "$R2"; do wait_ps "$r" "$ALICE" Alice && wait_ps "$r" "$BOB" "$(hs_name "$r" "$BOB")" ||
  die "profilestore did not see the joins"; done

log "alice renames globally (one PUT displayname)"
t0=$(now_ms)
hs_put=$(curl -sf -o /dev/null -w '%{time_total}' -XPUT -H "Authorization: Bearer $A" \
  "$HS/_matrix/client/v3/profile/$(enc "$ALICE")/displayname" -d '{"displayname":"Alice Renamed"}')
t_hs_put=$(now_ms)
for r in "$R1" "$R2"; do for _ in $(seq 300); do [ "$(hs_name "$r" "$ALICE")" = "Alice Renamed" ] && break; sleep 0.05; done; done
t_hs=$(now_ms)
rename_ok=1
for r in "$R1" "$R2"; do wait_ps "$r" "$ALICE" "Alice Renamed" || rename_ok=0; done
t_ps=$(now_ms)
echo "homeserver: PUT answered in ${hs_put}s; both rooms' state show it after $((t_hs - t0)) ms"
echo "profilestore: both rooms show it after $((t_ps - t0)) ms (from the PUT)"

log "alice sets a per-room nickname in R1 (m.room.member state with another displayname)"
member=$(api "$A" GET "/rooms/$(enc "$R1")/state/m.room.member/$(enc "$ALICE")")
api "$A" PUT "/rooms/$(enc "$R1")/state/m.room.member/$(enc "$ALICE")" \
  "$(jq -c '.displayname="Captain Alice"' <<<"$member")" >/dev/null
wait_ps "$R1" "$ALICE" "Captain Alice" || true
sleep 1 # let any late event arrive before comparing

# 5. Compare what a client of each sees now.
fail=0
mismatch() { echo "MISMATCH: $*"; fail=1; }
[ "$rename_ok" = 1 ] || mismatch "the global rename did not reach profilestore in both rooms"
R3=""
label() { case "$1" in "$R1") echo R1 ;; "$R2") echo R2 ;; "$R3") echo R3 ;; *) echo "$1" ;; esac; }
ROOMS=("$R1" "$R2")

compare() { # phase title
  log "$1: global profiles"
  for u in "$ALICE" "$BOB"; do
    h=$(api "$A" GET "/profile/$(enc "$u")" | jq -r '[.displayname // "", .avatar_url // empty] | join(" ")')
    p=$(curl -sf "$PS/_matrix/client/v3/profile/$(enc "$u")" | jq -r '[.displayname // "", .avatar_url // empty] | join(" ")' || echo "<error>")
    printf '%-18s homeserver=%-34s profilestore=%s\n' "$u" "$h" "$p"
    [ "$h" = "$p" ] || mismatch "$1: global profile of $u"
  done
  log "$1: members per room: homeserver joined_members vs profilestore members (admin)"
  printf '%-4s %-18s %-42s %-42s %s\n' room user "homeserver (name avatar)" "profilestore (name avatar)" ""
  for r in "${ROOMS[@]}"; do
    hs_json=$(api "$A" GET "/rooms/$(enc "$r")/joined_members")
    ps_json=$(psc "$ADM" "/_profilestore/v1/rooms/$(enc "$r")/members") || { mismatch "$1: profilestore members of $r"; continue; }
    hs_rows=$(jq -r '.joined | to_entries[] | [.key, (.value.display_name // ""), (.value.avatar_url // "")] | @tsv' <<<"$hs_json" | sort)
    ps_rows=$(jq -r '.members[] | select(.membership=="join") | [.user_id, (.displayname // ""), (.avatar_url // "")] | @tsv' <<<"$ps_json" | sort)
    for u in $(printf '%s\n%s\n' "$hs_rows" "$ps_rows" | cut -f1 | sort -u); do
      h=$(awk -F'\t' -v u="$u" '$1==u {print ($3 == "" ? $2 : $2 " " $3); f=1} END {if (!f) print "<absent>"}' <<<"$hs_rows")
      p=$(awk -F'\t' -v u="$u" '$1==u {print ($3 == "" ? $2 : $2 " " $3); f=1} END {if (!f) print "<absent>"}' <<<"$ps_rows")
      mark=ok; [ "$h" = "$p" ] || mark=MISMATCH
      printf '%-4s %-18s %-42s %-42s %s\n' "$(label "$r")" "$u" "$h" "$p" "$mark"
    done
    [ "$hs_rows" = "$ps_rows" ] || mismatch "$1: members of $(label "$r") ($r) differ"
  done
}
compare "after the rename and the nickname"

# 6. More of what homeservers do: a second global rename (Dendrite rewrites
# every room's member event, the nickname room included), a global avatar,
# and bob leaving R2.
log "alice renames again, sets an avatar; bob leaves R2"
api "$A" PUT "/profile/$(enc "$ALICE")/displayname" '{"displayname":"Alice Two"}' >/dev/null
api "$A" PUT "/profile/$(enc "$ALICE")/avatar_url" '{"avatar_url":"mxc://localhost/alice-avatar"}' >/dev/null
api "$B" POST "/rooms/$(enc "$R2")/leave" '{}' >/dev/null
for _ in $(seq 300); do
  [ "$(psc "$ADM" "/_profilestore/v1/rooms/$(enc "$R2")/members" | jq -r --arg u "$BOB" '[.members[] | select(.user_id==$u)] | length')" = 0 ] &&
    [ "$(psc "$ADM" "/_profilestore/v1/rooms/$(enc "$R1")/members" | jq -r --arg u "$ALICE" '.members[] | select(.user_id==$u) | .avatar_url // ""')" = mxc://localhost/alice-avatar ] && break
  sleep 0.1
done
sleep 1
compare "after the second rename, the avatar and the leave"

log "room histories (profilestore, admin, oldest first)"
# history room -> "user<TAB>kind|field|old -> new" lines (avatar_url values for avatar entries)
history() { psc "$ADM" "/_profilestore/v1/rooms/$(enc "$1")/history?dir=f&limit=1000" |
  jq -r '.chunk[] | (if .field == "avatar_url" then "avatar_url" else "displayname" end) as $f |
    [.user_id, ([.kind, (.field // "-"), ((.old[$f] // "") + " -> " + (.new[$f] // ""))] | join("|"))] | @tsv'; }
want_alice_R1="join|-| -> Alice
global_rename|displayname|Alice -> Alice Renamed
room_rename|displayname|Alice Renamed -> Captain Alice
override_cleared|displayname|Captain Alice -> Alice Two
global_avatar|avatar_url| -> mxc://localhost/alice-avatar"
want_alice_R2="join|-| -> Alice
global_rename|displayname|Alice -> Alice Renamed
global_rename|displayname|Alice Renamed -> Alice Two
global_avatar|avatar_url| -> mxc://localhost/alice-avatar"
want_bob_R1="join|-| -> bob"
want_bob_R2="join|-| -> bob
leave|-|bob -> "
for r in "$R1" "$R2"; do
  l=$(label "$r")
  h=$(history "$r") || { mismatch "profilestore history of $l"; continue; }
  echo "-- $l $r"; sed 's/^/   /' <<<"$h"
  for who in alice bob; do
    u=$ALICE; [ "$who" = bob ] && u=$BOB
    got=$(awk -F'\t' -v u="$u" '$1==u {print $2}' <<<"$h")
    want_var="want_${who}_$l"
    [ "$got" = "${!want_var}" ] || mismatch "$l history of $u: got
$got
want
${!want_var}"
  done
done

log "alice's global changes (profilestore user history, admin)"
uh=$(psc "$ADM" "/_profilestore/v1/users/$(enc "$ALICE")/history?dir=f&limit=1000" |
  jq -r '.chunk[] | select(.room_id == null) | (.field // "displayname") as $f | [.kind, $f, ((.old[$f] // "") + " -> " + (.new[$f] // ""))] | @tsv') ||
  mismatch "profilestore user history of alice"
sed 's/^/   /' <<<"$uh"
for name in "Alice Renamed" "Alice Two"; do
  n=$(grep -c -- "-> $name\$" <<<"$uh" || true)
  [ "$n" = 1 ] || mismatch "the rename to $name is recorded $n times as a global change, want 1"
done

# 6b. Moderation through the homeserver, in a third room: invites (accepted,
# rejected, revoked), kicks, bans (of a member, of a stranger), unbans,
# leave and rejoin, a per-room nickname, history visibility and power-level
# changes. Afterwards every room is compared: names, every user's
# membership, the room's membership history in the homeserver's order (as
# the creator), and, for members who are not moderators, the part of it
# history_visibility lets each of them see, from both sides.
log "moderation in R3: invites, kicks, bans, unbans, leave and rejoin, visibility and power levels"
CAROL=@carol:$SERVER_NAME DAVE=@dave:$SERVER_NAME EVE=@eve:$SERVER_NAME
C=$(register carol pw-carol-123456); D=$(register dave pw-dave-123456); E=$(register eve pw-eve-123456)
for t in "$C" "$D" "$E"; do [ -n "$t" ] && [ "$t" != null ] || die "registration gave no access token"; done
R3=$(api "$A" POST /createRoom '{"preset":"private_chat","name":"e2e moderation scenarios"}' | jq -r .room_id)
ROOMS+=("$R3")
echo "R3=$R3"
room() { printf '/rooms/%s' "$(enc "$R3")"; }
act() { # token verb user [reason]: invite, kick, ban, unban in R3
  api "$1" POST "$(room)/$2" "$(jq -nc --arg u "$3" --arg r "${4:-e2e}" '{user_id:$u, reason:$r}')" >/dev/null ||
    mismatch "the homeserver refused $2 of $3"
}
join3() { api "$1" POST "/join/$(enc "$R3")" '{}' >/dev/null || mismatch "the homeserver refused a join of R3 ($2)"; }
leave3() { api "$1" POST "$(room)/leave" '{}' >/dev/null || mismatch "the homeserver refused a leave of R3 ($2)"; }
set_state() { # type content
  api "$A" PUT "$(room)/state/$1" "$2" >/dev/null || mismatch "the homeserver refused $1 $2"
}
power() { # user level: alice changes one user's power level
  local pl; pl=$(api "$A" GET "$(room)/state/m.room.power_levels")
  set_state m.room.power_levels "$(jq -c --arg u "$1" --argjson l "$2" '.users[$u]=$l' <<<"$pl")"
}
# settle: wait until profilestore has applied everything the homeserver
# sent: its admin history of R3 stops growing, and has the expected length.
r3_len() { psc "$ADM" "/_profilestore/v1/rooms/$(enc "$R3")/history?dir=f&limit=1000" 2>/dev/null | jq '.chunk | length' 2>/dev/null || echo 0; }
settle() { # the same length four times in a row, 0.3 s apart (at most 30 s)
  local last=-1 n same=0
  for _ in $(seq 100); do
    n=$(r3_len); if [ "$n" = "$last" ]; then same=$((same + 1)); [ "$same" -ge 3 ] && return 0; else same=0; fi
    last=$n; sleep 0.3
  done
}

act "$A" invite "$BOB"; join3 "$B" bob                  # invite accepted
act "$A" invite "$CAROL"; leave3 "$C" carol             # invite rejected
act "$A" invite "$DAVE"; act "$A" kick "$DAVE" revoked   # invite revoked
set_state m.room.history_visibility '{"history_visibility":"joined"}'
act "$A" invite "$DAVE"; join3 "$D" dave
act "$A" kick "$BOB"                                     # kick
act "$A" invite "$BOB"; join3 "$B" bob                   # rejoin after a kick
act "$A" ban "$DAVE"                                     # ban of a member
if api "$D" POST "/join/$(enc "$R3")" '{}' >/dev/null 2>&1; then mismatch "the homeserver let banned dave join"; fi
act "$A" invite "$CAROL"; leave3 "$C" carol             # while dave is out: hidden from him as a member
act "$A" unban "$DAVE"                                   # unban: leave by alice on a banned member
act "$A" invite "$DAVE"; join3 "$D" dave                 # back after the unban
act "$A" ban "$EVE"; act "$A" unban "$EVE"               # ban and unban of someone never in the room
member=$(api "$B" GET "$(room)/state/m.room.member/$(enc "$BOB")")
api "$B" PUT "$(room)/state/m.room.member/$(enc "$BOB")" "$(jq -c '.displayname="Bobby in R3"' <<<"$member")" >/dev/null ||
  mismatch "bob's per-room nickname was refused"
power "$DAVE" 50                                         # dave moderates (kick level 50)
set_state m.room.history_visibility '{"history_visibility":"invited"}'
settle
# profilestore shows a moderator everything, entries before their join too.
all=$(r3_len)
dave_sees=$(psc "$D" "/_profilestore/v1/rooms/$(enc "$R3")/history?dir=f&limit=1000" | jq '.chunk | length' || echo error)
echo "R3 history entries: $all for the admin; $dave_sees for dave while he moderates"
[ "$dave_sees" = "$all" ] || mismatch "dave, a moderator of R3 (power 50), sees $dave_sees of $all history entries"
act "$A" invite "$CAROL"; join3 "$C" carol; leave3 "$C" carol   # leave ...
act "$A" invite "$CAROL"; join3 "$C" carol                      # ... and rejoin
act "$A" invite "$EVE"; join3 "$E" eve; act "$A" ban "$EVE"     # kicked and banned
# Knocks: Dendrite v0.15.2 has no /knock endpoint, and its /kick and
# /leave refuse a knocking user; a knock (and its denial or retraction) is
# sent as m.room.member state, which Dendrite's auth rules judge, in a room
# whose join rule is knock. What Dendrite accepts is compared below like
# every other membership change; what it refuses is only reported.
FRANK=@frank:$SERVER_NAME GRACE=@grace:$SERVER_NAME
F=$(register frank pw-frank-123456); G=$(register grace pw-grace-123456)
member_state() { # token user content what: an m.room.member state PUT in R3
  if api "$1" PUT "$(room)/state/m.room.member/$(enc "$2")" "$3" >/dev/null 2>&1; then echo "   knocks: $4: accepted"
  else echo "   knocks: $4: refused by the homeserver"; return 1; fi
}
set_state m.room.join_rules '{"join_rule":"knock"}'
knocks=refused
if member_state "$F" "$FRANK" '{"membership":"knock"}' "frank knocks"; then
  knocks=done
  act "$A" invite "$FRANK"; join3 "$F" frank              # knock accepted
  member_state "$G" "$GRACE" '{"membership":"knock"}' "grace knocks" || true
  member_state "$A" "$GRACE" '{"membership":"leave"}' "alice denies grace's knock" || true
  member_state "$G" "$GRACE" '{"membership":"knock"}' "grace knocks again" || true
  member_state "$G" "$GRACE" '{"membership":"leave"}' "grace retracts her knock" || true
  act "$A" invite "$GRACE"
  member_state "$G" "$GRACE" '{"membership":"knock"}' "grace, invited, knocks (ends the invite)" || true
fi
set_state m.room.join_rules '{"join_rule":"invite"}'
power "$DAVE" 0                                          # dave no longer moderates
set_state m.room.history_visibility '{"history_visibility":"shared"}'
settle
sleep 1
# Demoted, dave reads R3 as a member: no longer what happened while he was out.
all=$(r3_len)
dave_sees=$(psc "$D" "/_profilestore/v1/rooms/$(enc "$R3")/history?dir=f&limit=1000" | jq '.chunk | length' || echo error)
echo "R3 history entries: $all for the admin; $dave_sees for dave once he no longer moderates"
[ "$dave_sees" != error ] && [ "$dave_sees" -lt "$all" ] || mismatch "dave, no longer a moderator, still sees $dave_sees of $all entries"

compare "after the moderation scenarios"

# Every member event of a room, oldest first, as the creator sees the
# timeline (she has been joined since the start), read by the Matrix table:
# user<TAB>kind, kinds as profilestore names them. A join of a member
# already joined is a name change, not a membership: left out here.
# profilestore records no knocks: a knocking user is not in the room, and a
# knock ends an invite (a leave).
hs_membership() { # token room
  api "$1" GET "/rooms/$(enc "$2")/messages?dir=b&limit=1000&filter=$(enc '{"types":["m.room.member"],"lazy_load_members":false}')" |
    jq -r '[.chunk[]] | reverse | reduce .[] as $e ({state: {}, out: []};
      ($e.state_key) as $u | (.state[$u] // "leave") as $prev | ($e.content.membership) as $m |
      (if $m == "join" then (if $prev == "join" then null else "join" end)
       elif $m == "invite" then (if $prev == "invite" then null else "invite" end)
       elif $m == "ban" then (if $prev == "ban" then null else "ban" end)
       elif $m == "leave" then
         (if $prev == "leave" then null elif $prev == "ban" then "unban" elif $e.sender == $u then "leave" else "kick" end)
       elif $m == "knock" then (if $prev == "invite" then "leave" else null end)
       else null end) as $k |
      .state[$u] = (if $m == "knock" then (if $prev == "invite" then "leave" else $prev end) else $m end) |
      if $k then .out += [$u + "\t" + $k] else . end) | .out[]'
}
ps_membership() { # token room
  psc "$1" "/_profilestore/v1/rooms/$(enc "$2")/history?dir=f&limit=1000" |
    jq -r '.chunk[] | select(.kind | IN("join","invite","leave","kick","ban","unban")) | [.user_id, .kind] | @tsv'
}
# The state each user ends in, from a membership list as above.
final_states() { awk -F'\t' '{s=$2; if (s=="kick"||s=="unban") s="leave"; st[$1]=s} END {for (u in st) print u "\t" st[u]}' | sort; }

# compare_rooms title member...: every room's membership history and
# users' states, then R3 as each member given (joined, not moderating).
compare_rooms() {
  local title=$1; shift
  log "$title: every room's membership history (homeserver timeline vs profilestore, as the creator) and each user's state"
  for r in "${ROOMS[@]}"; do
    l=$(label "$r")
    h=$(hs_membership "$A" "$r") || { mismatch "homeserver timeline of $l"; continue; }
    p=$(ps_membership "$A" "$r") || { mismatch "profilestore history of $l"; continue; }
    echo "-- $l: $(wc -l <<<"$h") membership changes on the homeserver, $(wc -l <<<"$p") in profilestore"
    if [ "$h" = "$p" ]; then sed 's/^/   /' <<<"$p"; else
      mismatch "$l membership history differs:"; diff <(echo "$h") <(echo "$p") | sed 's/^/   /' || true; fi
    # Who is joined, invited or banned now (leave, knock and never-seen
    # all mean "not in the room").
    hs_state=$(api "$A" GET "/rooms/$(enc "$r")/members" | jq -r '.chunk[] | [.state_key, .content.membership] | @tsv' |
      awk -F'\t' '$2=="join" || $2=="invite" || $2=="ban"' | sort)
    ps_state=$(final_states <<<"$p" | awk -F'\t' '$2!="leave"')
    [ "$hs_state" = "$ps_state" ] || { mismatch "$l: users' memberships differ"; diff <(echo "$hs_state") <(echo "$ps_state") | sed 's/^/   /' || true; }
  done
  log "$title: R3 as each member who does not moderate: what history_visibility shows them"
  for who in "$@"; do
    case $who in bob) t=$B u=$BOB ;; carol) t=$C u=$CAROL ;; dave) t=$D u=$DAVE ;; frank) t=$F u=$FRANK ;; esac
    h=$(hs_membership "$t" "$R3") || { mismatch "homeserver timeline of R3 as $who"; continue; }
    p=$(ps_membership "$t" "$R3") || { mismatch "profilestore history of R3 as $who"; continue; }
    echo "-- $who ($u): $(grep -c . <<<"$h") entries on the homeserver, $(grep -c . <<<"$p") in profilestore"
    [ "$h" = "$p" ] || { mismatch "R3 as $who differs (homeserver <, profilestore >):"; diff <(echo "$h") <(echo "$p") | sed 's/^/   /' || true; }
  done
}
# frank (who knocked) is not among them: Dendrite hid from him events it
# must show him (a leave under shared visibility while he was joined; a
# run on 2026-12-01), so the homeserver is no reference for his view.
compare_rooms "after the moderation scenarios" bob carol dave

# Transactions as received (trace log), kept for fixtures.
jq -c 'select(.msg=="appservice transaction received") | {txn_id, events, body: (.body | fromjson)}' \
  "$WORK/profilestore.log" > "$WORK/transactions.ndjson" 2>/dev/null || true
echo
echo "transactions received: $(wc -l < "$WORK/transactions.ndjson"), events: $(jq -s 'map(.events) | add // 0' "$WORK/transactions.ndjson")" \
  "(saved in $WORK/transactions.ndjson)"
grep -E '"level":"(warning|error)"' "$WORK/profilestore.log" | sed 's/^/profilestore: /' | head -20 || true

# The store's own record: alice's profile stream holds exactly four
# field writes: the first name (seen at her first join), two renames, the avatar.
kill "$PS_PID"; wait "$PS_PID" 2>/dev/null || true # export needs the store file's lock
sets=$("$BIN/profilestore" -c "$WORK/profilestore.yaml" export 2>/dev/null |
  jq -r --arg s "profile-$ALICE" 'select(.stream==$s and .type=="profile.field_set") | .type' | wc -l)
echo "profile.field_set events in profile-$ALICE: $sets (want 4: the first name, two renames, the avatar)"
[ "$sets" -eq 4 ] || mismatch "alice's profile stream has $sets field_set events"

# 6c. While profilestore is down, the homeserver goes on: carol leaves R3,
# alice kicks dave, bob renames himself in R3. Dendrite holds the
# transactions and retries (backing off); after the restart below they
# must all arrive, once.
log "while profilestore is down: carol leaves R3, alice kicks dave, bob's R3 nickname changes"
leave3 "$C" carol
act "$A" kick "$DAVE"
member=$(api "$B" GET "$(room)/state/m.room.member/$(enc "$BOB")")
api "$B" PUT "$(room)/state/m.room.member/$(enc "$BOB")" "$(jq -c '.displayname="Bobby again"' <<<"$member")" >/dev/null ||
  mismatch "bob's second nickname was refused"

# 7. Moderation alerts through the real homeserver: the bot posts to a
# moderation room when a member takes a look-alike of a moderator's name.
log "alerts: alice makes a moderation room and invites profilestore's bot"
BOT="@$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["sender_localpart"])' "$WORK/registration.yaml"):$SERVER_NAME"
MODS=$(api "$A" POST /createRoom '{"preset":"private_chat","name":"e2e moderation"}' | jq -r .room_id)
api "$A" POST "/rooms/$(enc "$MODS")/invite" "$(jq -nc --arg u "$BOT" '{user_id:$u}')" >/dev/null ||
  mismatch "alice could not invite the bot $BOT"
cat >> "$WORK/profilestore.yaml" <<YAML
alerts:
  enabled: true
  console_url: $PS
  matrix: {room: "$MODS"}
YAML
"$BIN/profilestore" -c "$WORK/profilestore.yaml" serve > "$WORK/profilestore-alerts.log" 2>&1 &
pids+=($!)
wait_for "$PS/health"
for _ in $(seq 100); do [ -f "$WORK/ps/alerts-watched.json" ] && break; sleep 0.1; done
[ -f "$WORK/ps/alerts-watched.json" ] || mismatch "the alert watcher did not start"

# What happened while profilestore was down has arrived.
t0=$(now_ms)
wait_ps "$R3" "$BOB" "Bobby again" && for _ in $(seq 300); do
  [ "$(psc "$ADM" "/_profilestore/v1/rooms/$(enc "$R3")/members" | jq -r --arg c "$CAROL" --arg d "$DAVE" '[.members[] | select(.user_id==$c or .user_id==$d)] | length')" = 0 ] && break
  sleep 0.1
done || mismatch "what happened while profilestore was down did not arrive"
echo "the changes made while profilestore was down arrived $(( $(now_ms) - t0 )) ms after its restart answered"
sleep 1
compare "after profilestore's restart"
compare_rooms "after profilestore's restart" bob

log "mallory joins R1 as a look-alike of alice (Cyrillic А), through the homeserver"
M=$(register mallory pw-mallory-123456)
api "$M" PUT "/profile/$(enc "@mallory:$SERVER_NAME")/displayname" '{"displayname":"\u0410lice Two"}' >/dev/null
api "$M" POST "/join/$(enc "$R1")" '{}' >/dev/null
notice=""
for _ in $(seq 300); do
  notice=$(api "$A" GET "/rooms/$(enc "$MODS")/messages?dir=b&limit=20" |
    jq -r --arg bot "$BOT" '[.chunk[] | select(.type=="m.room.message" and .sender==$bot and .content.msgtype=="m.notice")] | first | .content // empty | tojson')
  [ -n "$notice" ] && break
  sleep 0.1
done
if [ -z "$notice" ]; then
  mismatch "no m.notice from $BOT in the moderation room $MODS"
  grep -E '"level":"(warning|error)"' "$WORK/profilestore-alerts.log" | head -10 || true
else
  body=$(jq -r .body <<<"$notice")
  echo "notice in the moderation room (plain body):"; sed 's/^/   /' <<<"$body"
  for want in "Possible impersonation of a moderator in $R1" "@mallory:$SERVER_NAME took" "U+0410 CYRILLIC CAPITAL LETTER A (Cyrillic)" \
      "($ALICE, moderator)" "$PS/console/rooms/"; do
    grep -qF -- "$want" <<<"$body" || mismatch "the notice lacks: $want"
  done
  [ "$(jq -r .format <<<"$notice")" = org.matrix.custom.html ] && jq -e '.formatted_body | test("<b>Possible impersonation")' <<<"$notice" >/dev/null ||
    mismatch "the notice has no HTML formatted body"
fi
delivered=$(curl -sf "$PS/metrics" | awk '/^profilestore_alert_deliveries_total\{sink="matrix"\}/ {print $2}')
echo "alert deliveries to Matrix (metrics): ${delivered:-0}"

# Every transaction of the run, from both profilestore processes (the
# second received what Dendrite held while the first was stopped).
cat "$WORK/profilestore.log" "$WORK/profilestore-alerts.log" 2>/dev/null |
  jq -cR 'fromjson? | select(.msg=="appservice transaction received") | {txn_id, events, body: (.body | fromjson)}' \
  > "$WORK/transactions.ndjson" || true
echo "transactions received by both processes: $(wc -l < "$WORK/transactions.ndjson") (saved in $WORK/transactions.ndjson);" \
  "knocks through the homeserver: $knocks"

echo
if [ "$fail" = 0 ]; then echo "PASS: profilestore agrees with Dendrite $DENDRITE_VERSION, and its alert reached the moderation room"; else echo "FAIL: see MISMATCH lines above"; fi
exit "$fail"
