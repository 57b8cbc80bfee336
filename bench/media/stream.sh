# Shared by bench/media/run.sh and janus.sh: create a stream owned by a newly registered
# account on the onaird at $1 (http://host:port); sets SID and SKEY.
create_media_stream() {
    local token resp
    token=$(register_token "$1")
    resp=$(curl -sf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d '{"title":"media bench"}' "$1/api/v1/streams")
    SID=$(echo "$resp" | sed -n 's/.*"stream":{[^}]*"id":"\([^"]*\)".*/\1/p')
    [ -n "$SID" ] || SID=$(echo "$resp" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
    SKEY=$(echo "$resp" | sed -n 's/.*"stream_key":"\([^"]*\)".*/\1/p')
    [ -n "$SID" ] && [ -n "$SKEY" ] || { echo "stream create failed: $resp"; exit 1; }
}
