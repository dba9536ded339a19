-- Seeds a key's spending in a period with the ledger's sum, unless an instance already did (or
-- requests were charged to it since): the ledger is read once per instance and key, Redis's
-- count is the fleet's from then on.
-- KEYS[1]: the spending; ARGV[1]: the ledger's sum (ticks); ARGV[2]: how long it is kept (ms)
-- after its last use, 0 for ever. Returns the spending.
if redis.call('SETNX', KEYS[1], ARGV[1]) == 1 then
  local keep = tonumber(ARGV[2])
  if keep > 0 then redis.call('PEXPIRE', KEYS[1], keep) end
end
return redis.call('GET', KEYS[1])
