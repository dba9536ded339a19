-- Charges a request's real token count in place of its reservation, on the shared bucket.
-- KEYS[1]: the key's tokens bucket; ARGV[1]: tokens per minute; ARGV[2]: reserved minus actual
-- (negative when the answer was longer); ARGV[3]: how long an idle bucket is kept (ms).
-- A longer answer may take the bucket below zero, but never below one whole minute of debt.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'stamp', 'cap')
local level, stamp = tonumber(v[1]), tonumber(v[2])
if level == nil or stamp == nil or tonumber(v[3]) ~= cap then
  level = cap
else
  level = math.min(cap, level + math.max(0, now - stamp) * cap / 60)
end
level = math.max(-cap, math.min(cap, level + delta))
redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', tostring(now), 'cap', cap)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return tostring(level)
