-- Charges a request's real cost in place of its reservation.
-- KEYS[1]: the counter its reservation was taken in (reserve.lua: prefix and minute);
-- KEYS[2]: the spending of the period the cost falls in (the row's own time)
-- ARGV[1]: the reservation; ARGV[2]: the real cost (ticks); ARGV[3]: how long the spending is
-- kept (ms) after its last use, 0 for ever
if redis.call('EXISTS', KEYS[1]) == 1 then  -- else it outlived its window and is forgotten
  redis.call('DECRBY', KEYS[1], tonumber(ARGV[1]))
end
redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]))
local keep = tonumber(ARGV[3])
if keep > 0 then redis.call('PEXPIRE', KEYS[2], keep) end
return 1
