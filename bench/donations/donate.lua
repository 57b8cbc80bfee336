-- wrk script for bench/donations/run.sh: POST donations of 500 USD cents to one stream, each with
-- a fresh Idempotency-Key, except every tenth request, which resends the previous key (a client
-- retry: it must get the same donation). Every answered donation id is appended to
-- $IDS_DIR/ids-<thread>, and the statuses are counted.
local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
    table.insert(threads, thread)
end

function init(args)
    n = 0
    created = 0
    other = 0
    out = io.open(os.getenv("IDS_DIR") .. "/ids-" .. tid, "w")
    body = '{"amount": 500, "currency": "USD"}'
    path = "/api/v1/streams/" .. os.getenv("SID") .. "/donations"
    auth = "Bearer " .. os.getenv("DONOR")
end

function request()
    n = n + 1
    local k = n
    if n % 10 == 0 then
        k = n - 1
    end
    return wrk.format("POST", path, {["Authorization"] = auth,
                                     ["Content-Type"] = "application/json",
                                     ["Idempotency-Key"] = "t" .. tid .. "-" .. k}, body)
end

function response(status, headers, resp)
    if status == 201 then
        created = created + 1
        local id = resp:match('"id":%s*"(%x+)"')
        if id then
            out:write(id, "\n")
            out:flush()
        end
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local c, o = 0, 0
    for _, t in ipairs(threads) do
        c = c + t:get("created")
        o = o + t:get("other")
    end
    io.write(string.format("answers_201=%d other=%d p99_ms=%.1f\n", c, o,
                           latency:percentile(99) / 1000))
end
