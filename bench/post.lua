-- wrk request script: POSTs one fixed JSON body, optionally with an Authorization header.
-- Usage: wrk ... -s bench/post.lua <url> -- <body-file> [<authorization>]
-- The body comes from a file so that this script never needs quoting or escaping of JSON.

function init(args)
   local file = assert(io.open(args[1], "rb"), "cannot read body file " .. tostring(args[1]))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = "application/json"
   if args[2] and args[2] ~= "" then
      wrk.headers["Authorization"] = args[2]
   end
end
