-- Trims one stream without losing a message some consumer group has not acknowledged.
-- KEYS[1]: the stream. ARGV[1]: how many messages to keep at least. ARGV[2]: the most to
-- remove in this call, so one call never blocks Redis for long.
-- Returns how many messages were removed.
--
-- One script, so no group can be created and no message delivered between choosing what
-- to remove and removing it.

local key = KEYS[1]
local keep = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])

local excess = redis.call('XLEN', key) - keep
if excess <= 0 then
  return 0
end
if excess > batch then
  excess = batch
end

-- Ids are '<ms>-<seq>', both decimal without leading zeros, and may exceed what a Lua
-- number holds exactly, so they are compared and incremented as strings.
local function split(id)
  return string.match(id, '^(%d+)-(%d+)$')
end

local function compare_decimal(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

local function compare_id(a, b)
  local a_ms, a_seq = split(a)
  local b_ms, b_seq = split(b)
  local by_ms = compare_decimal(a_ms, b_ms)
  if by_ms ~= 0 then
    return by_ms
  end
  return compare_decimal(a_seq, b_seq)
end

local function increment_decimal(digits)
  local i = #digits
  while i > 0 and string.sub(digits, i, i) == '9' do
    i = i - 1
  end
  if i == 0 then
    return '1' .. string.rep('0', #digits)
  end
  return string.sub(digits, 1, i - 1) .. string.char(string.byte(digits, i) + 1)
    .. string.rep('0', #digits - i)
end

local function next_id(id)
  local ms, seq = split(id)
  if seq == '18446744073709551615' then
    return increment_decimal(ms) .. '-0'
  end
  return ms .. '-' .. increment_decimal(seq)
end

-- The end of the prefix every group has acknowledged: a group has acknowledged up to and
-- including its last-delivered id, and only up to (excluding) its oldest pending id.
local limit = nil
local limit_inclusive = true
for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local name, last_delivered
  for i = 1, #group, 2 do
    if group[i] == 'name' then
      name = group[i + 1]
    elseif group[i] == 'last-delivered-id' then
      last_delivered = group[i + 1]
    end
  end
  local bound, inclusive = last_delivered, true
  local pending = redis.call('XPENDING', key, name)
  if pending[1] > 0 then
    bound, inclusive = pending[2], false
  end
  if limit == nil then
    limit, limit_inclusive = bound, inclusive
  else
    local order = compare_id(bound, limit)
    if order < 0 or (order == 0 and not inclusive) then
      limit, limit_inclusive = bound, inclusive
    end
  end
end

local range_end = '+'
if limit ~= nil then
  range_end = limit_inclusive and limit or ('(' .. limit)
end
local removable = redis.call('XRANGE', key, '-', range_end, 'COUNT', excess)
if #removable == 0 then
  return 0
end
-- XRANGE from '-' returned the oldest entries, so this removes exactly them.
return redis.call('XTRIM', key, 'MINID', next_id(removable[#removable][1]))
