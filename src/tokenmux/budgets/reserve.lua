-- Admits one request of a key against its budget for the period, or refuses it.
-- KEYS[1]: the key's spending in the period (ticks of 1e-10 USD, a plain counter)
-- KEYS[2]: the prefix of its reservations' counters, one per minute of admission (suffix: the
--          minute since the epoch), each dropped after ARGV[4] minutes: the reservation of a
--          request whose instance died is forgotten then, never held for good
-- ARGV[1]: the budget; ARGV[2]: the request's worst-case cost; ARGV[3]: how long the spending
-- is kept (ms) after its last use, 0 for ever (a `total` budget); ARGV[4]: the minutes a
-- reservation is counted (longer than any request may last)
-- Returns {verdict, left, minute}: "ok", what is left once this reservation is taken and the
-- minute it is counted under; or "over" and what is left (zero or less) before it.
-- A request is admitted while anything is left: the last one may take the key over its
-- budget, by at most its own reservation.
local t = redis.call('TIME')
local minute = math.floor(tonumber(t[1]) / 60)
local window = tonumber(ARGV[4])
local held = 0
for m = minute - window + 1, minute do
  held = held + math.max(0, tonumber(redis.call('GET', KEYS[2] .. m)) or 0)
end
local spent = tonumber(redis.call('GET', KEYS[1])) or 0
local left = tonumber(ARGV[1]) - spent - held
if left <= 0 then
  return {'over', string.format('%d', left), string.format('%d', minute)}
end
local worst = tonumber(ARGV[2])
local bucket = KEYS[2] .. minute
redis.call('INCRBY', bucket, worst)
redis.call('EXPIRE', bucket, (window + 1) * 60)
return {'ok', string.format('%d', left - worst), string.format('%d', minute)}
