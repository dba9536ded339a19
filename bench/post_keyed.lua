-- wrk request script: as post.lua, and each request carries an Idempotency-Key of its own, so
-- every one runs upstream (none is a replay) and pays the key's claim and keep.
-- Usage: wrk ... -s bench/post_keyed.lua <url> -- <body-file> <authorization> <key-prefix>

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

local sent = 0
local prefix = ""

function init(args)
   local file = assert(io.open(args[1], "rb"), "cannot read body file " .. tostring(args[1]))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = "application/json"
   if args[2] and args[2] ~= "" then
      wrk.headers["Authorization"] = args[2]
   end
   prefix = (args[3] or "bench") .. "-" .. tostring(tid) .. "-"
end

function request()
   sent = sent + 1
   wrk.headers["Idempotency-Key"] = prefix .. sent
   return wrk.format()
end
