-- Admits one request of a key against its shared token buckets, or says how long to wait.
-- The same arithmetic as the in-process limiter (limits/memory.py), on Redis's own clock so that
-- every instance agrees: a bucket holds a minute's allowance and refills continuously.
--
-- KEYS[1]: the key's requests bucket, KEYS[2]: its tokens bucket (hashes: level, stamp, cap)
-- ARGV[1]: requests per minute, or "" for none; ARGV[2]: tokens per minute, or "";
-- ARGV[3]: the tokens to reserve (the estimate); ARGV[4]: how long an idle bucket is kept (ms)
-- Returns {verdict, wait_s, requests_level, tokens_level, reserved}, numbers as strings:
-- verdict "ok", "requests" or "tokens" (the bucket that refused).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local keep = tonumber(ARGV[4])

local function level_of(key, cap)
  local v = redis.call('HMGET', key, 'level', 'stamp', 'cap')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil or stamp == nil or tonumber(v[3]) ~= cap then
    return cap  -- new, expired (an idle bucket is full) or its limit changed
  end
  return math.min(cap, level + math.max(0, now - stamp) * cap / 60)
end

local function wait_for(level, cap, amount)
  local missing = amount - level
  if missing <= 0 then return 0 end
  return missing / (cap / 60)
end

local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local requests, tokens = nil, nil
if rpm then requests = level_of(KEYS[1], rpm) end
if tpm then tokens = level_of(KEYS[2], tpm) end

local function answer(verdict, wait, reserved)
  return {verdict, string.format('%.6f', wait),
          requests and string.format('%.6f', requests) or '',
          tokens and string.format('%.6f', tokens) or '', tostring(reserved)}
end

if requests then
  local wait = wait_for(requests, rpm, 1)
  if wait > 0 then return answer('requests', wait, 0) end
end
local needed = 0
if tokens then
  -- No reservation takes more than the whole bucket; the rest is settled from the real count.
  needed = math.min(tonumber(ARGV[3]), math.floor(tpm))
  local wait = wait_for(tokens, tpm, needed)
  if wait > 0 then return answer('tokens', wait, 0) end
  tokens = tokens - needed
  redis.call('HSET', KEYS[2], 'level', tostring(tokens), 'stamp', tostring(now), 'cap', tpm)
  redis.call('PEXPIRE', KEYS[2], keep)
end
if requests then
  requests = requests - 1
  redis.call('HSET', KEYS[1], 'level', tostring(requests), 'stamp', tostring(now), 'cap', rpm)
  redis.call('PEXPIRE', KEYS[1], keep)
end
return answer('ok', 0, needed)
