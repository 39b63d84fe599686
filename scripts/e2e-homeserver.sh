#!/usr/bin/env bash
# End-to-end check of mirror mode against a locally built Dendrite (not run
# in CI; see docs/APPSERVICE.md for what has and has not been run).
#
# It builds Dendrite and profilestore, registers profilestore as an
# appservice, creates two users and two rooms through the homeserver, renames
# a user globally and sets a per-room nickname, then compares profilestore's
# view of each member with the homeserver's room state.
#
# Needs: go, curl, jq. Uses ports 18008 (Dendrite) and 18080 (profilestore).
set -euo pipefail

DENDRITE_VERSION=${DENDRITE_VERSION:-latest}
WORK=${WORK:-$(mktemp -d)}
HS=http://127.0.0.1:18008
PS=http://127.0.0.1:18080
SERVER_NAME=localhost
ROOT=$(cd "$(dirname "$0")/.." && pwd)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
echo "work directory: $WORK"

# 1. Build both.
GOBIN="$WORK/bin" go install "github.com/element-hq/dendrite/cmd/dendrite@$DENDRITE_VERSION" \
  "github.com/element-hq/dendrite/cmd/generate-keys@$DENDRITE_VERSION" \
  "github.com/element-hq/dendrite/cmd/generate-config@$DENDRITE_VERSION" \
  "github.com/element-hq/dendrite/cmd/create-account@$DENDRITE_VERSION"
(cd "$ROOT" && go build -o "$WORK/bin/profilestore" ./cmd/profilestore)

# 2. Register profilestore and configure Dendrite (SQLite, no federation).
cat > "$WORK/profilestore.yaml" <<YAML
data_dir: $WORK/ps
listen: 127.0.0.1:18080
auth: {mode: homeserver, homeserver_url: $HS}
appservice: {enabled: true}
YAML
"$WORK/bin/profilestore" -c "$WORK/profilestore.yaml" appservice register \
  --server-name "$SERVER_NAME" --url "$PS" > "$WORK/registration.yaml"
(cd "$WORK" && "$WORK/bin/generate-keys" --private-key matrix_key.pem >/dev/null)
"$WORK/bin/generate-config" -dir "$WORK/dendrite" -server "$SERVER_NAME" -db "file:$WORK/dendrite.db" > "$WORK/dendrite.yaml"
# Point Dendrite at the registration and let users register with a secret.
sed -i "s|private_key: .*|private_key: $WORK/matrix_key.pem|" "$WORK/dendrite.yaml"
sed -i "s|config_files: \[\]|config_files: [$WORK/registration.yaml]|" "$WORK/dendrite.yaml"
sed -i "s|registration_shared_secret: .*|registration_shared_secret: e2e-secret|" "$WORK/dendrite.yaml"

# 3. Start both.
"$WORK/bin/dendrite" --config "$WORK/dendrite.yaml" --http-bind-address 127.0.0.1:18008 > "$WORK/dendrite.log" 2>&1 &
pids+=($!)
"$WORK/bin/profilestore" -c "$WORK/profilestore.yaml" serve > "$WORK/profilestore.log" 2>&1 &
pids+=($!)
for url in "$HS/_matrix/client/versions" "$PS/health"; do
  for _ in $(seq 60); do curl -sf "$url" >/dev/null && break; sleep 1; done
done

# 4. Users, rooms, names through the homeserver.
for u in alice bob; do
  "$WORK/bin/create-account" --config "$WORK/dendrite.yaml" --username "$u" --password "pw-$u-123456" >/dev/null
done
login() { curl -sf -XPOST "$HS/_matrix/client/v3/login" -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$1\"},\"password\":\"pw-$1-123456\"}" | jq -r .access_token; }
A=$(login alice); B=$(login bob)
api() { local tok=$1 method=$2 path=$3 body=${4:-}; curl -sf -X "$method" -H "Authorization: Bearer $tok" "$HS/_matrix/client/v3$path" ${body:+-d "$body"}; }
api "$A" PUT "/profile/@alice:$SERVER_NAME/displayname" '{"displayname":"Alice"}' >/dev/null
R1=$(api "$A" POST /createRoom '{"preset":"public_chat"}' | jq -r .room_id)
R2=$(api "$A" POST /createRoom '{"preset":"public_chat"}' | jq -r .room_id)
for r in "$R1" "$R2"; do api "$B" POST "/join/$r" '{}' >/dev/null; done
sleep 2
api "$A" PUT "/profile/@alice:$SERVER_NAME/displayname" '{"displayname":"Alice Renamed"}' >/dev/null   # global
member=$(api "$A" GET "/rooms/$R1/state/m.room.member/@alice:$SERVER_NAME")
api "$A" PUT "/rooms/$R1/state/m.room.member/@alice:$SERVER_NAME" "$(echo "$member" | jq -c '.displayname="Captain Alice"')" >/dev/null  # per-room nick
sleep 3

# 5. Compare: profilestore's global profile and room members with the homeserver's state.
fail=0
hs_global=$(api "$A" GET "/profile/@alice:$SERVER_NAME/displayname" | jq -r .displayname)
ps_global=$(curl -sf "$PS/_matrix/client/v3/profile/@alice:$SERVER_NAME/displayname" | jq -r .displayname)
echo "global: homeserver=$hs_global profilestore=$ps_global"
[ "$hs_global" = "$ps_global" ] || fail=1
for r in "$R1" "$R2"; do
  hs_name=$(api "$A" GET "/rooms/$r/state/m.room.member/@alice:$SERVER_NAME" | jq -r .displayname)
  ps_name=$(curl -sf -H "Authorization: Bearer $A" "$PS/_profilestore/v1/rooms/$r/members" 2>/dev/null \
    | jq -r --arg u "@alice:$SERVER_NAME" '(.members // .chunk // [])[] | select(.user_id==$u) | .displayname' || true)
  echo "room $r: homeserver=$hs_name profilestore=${ps_name:-<no room view route>}"
  [ "$hs_name" = "$ps_name" ] || fail=1
done
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true  # export needs the store file's lock
global_sets=$("$WORK/bin/profilestore" -c "$WORK/profilestore.yaml" export 2>/dev/null | jq -r 'select(.stream=="profile-@alice:'"$SERVER_NAME"'" and .type=="profile.field_set") | .type' | wc -l)
echo "global changes recorded for alice: $global_sets (want 2: the first name and the rename)"
[ "$global_sets" -eq 2 ] || fail=1
exit $fail
