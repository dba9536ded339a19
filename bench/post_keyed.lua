-- wrk request script: post.lua's request, and each one carries an Idempotency-Key of its own,
-- so every request runs upstream (none is a replay) and pays the key's claim and keep.
-- Usage: wrk ... -s bench/post_keyed.lua <url> -- <body-file> <authorization> <key-prefix>
-- (A separate script, because wrk sends a fixed request, at no cost per request, only when the
-- script defines no request function.)

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "post.lua")

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

local sent = 0
local prefix = ""
local plain_init = init

function init(args)
   plain_init(args)
   prefix = (args[3] or "bench") .. "-" .. tostring(tid) .. "-"
end

function request()
   sent = sent + 1
   wrk.headers["Idempotency-Key"] = prefix .. sent
   return wrk.format()
end
