#!/usr/bin/env bash
# Makes the schema-4 fixture with the binary $K (built from 4afb5c2).
set -euo pipefail
K=${K:?}
export FERNET_KEY='Vj6t2f0pQ9y8mH5xJ3kL1nR4sT7uW0zA2bC5dE8fG1I='
D=$PWD/schema4-store
rm -rf "$D"
ADMIN=$($K init --data-dir "$D" 2>/dev/null)
READER=$($K token create --data-dir "$D" --name orchestrator --role reader 2>/dev/null)
SHORT=$($K token create --data-dir "$D" --name ci --role reader --ttl 3650d 2>/dev/null)
GONE=$($K token create --data-dir "$D" --name old-admin --role admin 2>/dev/null)
$K serve --data-dir "$D" --listen 127.0.0.1:18787 > serve.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s http://127.0.0.1:18787/healthz >/dev/null && break; sleep 0.1; done
H="Authorization: Bearer $ADMIN"
A=$(curl -s -H "$H" -H 'content-type: application/json' -d '{"provider":"claude","key_name":"main","api_key":"sk-ant-schema4-claude-0001"}' http://127.0.0.1:18787/api/keys | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
B=$(curl -s -H "$H" -H 'content-type: application/json' -d '{"provider":"gemini","key_name":"main","api_key":"AIza-schema4-gemini-0002"}' http://127.0.0.1:18787/api/keys | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
C=$(curl -s -H "$H" -H 'content-type: application/json' -d '{"provider":"github","key_name":"ci","api_key":"ghp-schema4-github-0003"}' http://127.0.0.1:18787/api/keys | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
curl -s -X PUT -H "$H" -H 'content-type: application/json' -d '{"api_key":"sk-ant-schema4-claude-0001-v2"}' http://127.0.0.1:18787/api/keys/$A >/dev/null
curl -s -X DELETE -H "$H" http://127.0.0.1:18787/api/keys/$C >/dev/null
curl -s -H "Authorization: Bearer $READER" http://127.0.0.1:18787/api/providers/claude/key >/dev/null
curl -s -H "Authorization: Bearer kh_wrong" http://127.0.0.1:18787/api/providers/claude/key >/dev/null
GONE_ID=$(curl -s -H "$H" http://127.0.0.1:18787/api/tokens | python3 -c 'import json,sys;print([t["id"] for t in json.load(sys.stdin) if t["name"]=="old-admin"][0])')
curl -s -X DELETE -H "$H" http://127.0.0.1:18787/api/tokens/$GONE_ID >/dev/null
kill -TERM $PID; wait $PID || true
$K backup --data-dir "$D" schema4.backup 2>/dev/null
cat > tokens.txt <<T
admin=$ADMIN
orchestrator=$READER
ci=$SHORT
old-admin(revoked)=$GONE
claude=$A
gemini=$B
github(deleted)=$C
T
