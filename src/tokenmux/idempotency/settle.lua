-- Ends a run: its record becomes the kept answer, or the failure, unless another run holds the
-- id by now (the claim expired and was taken again).
-- KEYS[1]  the id's key
-- ARGV[1]  the running record the run set when it claimed
-- ARGV[2]  the record that replaces it; empty: the id is simply let go
-- ARGV[3]  how long that one stays, in milliseconds
local value = redis.call('GET', KEYS[1])
if value == false or value == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
return 0
