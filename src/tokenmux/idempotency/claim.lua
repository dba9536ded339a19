-- Claims an idempotency id for one run, in one step, so two instances never both run it.
-- KEYS[1]  the id's key
-- ARGV[1]  the body's fingerprint (16 bytes)
-- ARGV[2]  the running record: "R" .. fingerprint .. run token
-- ARGV[3]  how long the claim holds, in milliseconds (a run whose instance died lets go)
-- Returns "C" when claimed, "M" when the id holds another body, else the record that holds it.
-- A failed run's record ("F…") stays only for the repeats waiting on it: the id is free.
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 1) ~= 'F' then
  if string.sub(value, 2, 17) ~= ARGV[1] then
    return 'M'
  end
  return value
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 'C'
