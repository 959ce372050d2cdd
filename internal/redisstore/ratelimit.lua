-- Decides a batch of requests, each against every zone it matched,
-- atomically, with the arithmetic of internal/limiter in microseconds.
-- The requests are decided in order, each as if alone: a later one sees
-- what an earlier one charged. Each state key is read once and written
-- once, however many requests of the batch touch it.
--
-- KEYS      the state keys the batch touches, each once
-- ARGV[1]   now in Unix microseconds, or "" for the server's TIME
-- ARGV[2]   when the batch expires, in Unix microseconds on the server's
--           clock, or "": a script that runs later (a hung server that
--           resumes, long after its callers gave up and were decided by
--           their fail_mode) decides nothing and returns { now } alone
-- ARGV[3]   the number of requests
-- then per request: its number of zones, then per zone 7 values: the
--           index of its state key in KEYS, algorithm (0 sliding, 1 fixed,
--           2 token, 3 leaky), events, window (µs), burst, cost, flags
--           (0, or the sum of 1: dry run, and 2: peek, which decides the
--           request and charges nothing, as if another zone refused it)
--
-- Returns { now, then per request: admitted, then per zone: allowed,
-- remaining, reset µs, retry µs (-1: never), wait µs }.

local NB = 16

local function floordiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function int(x)
  return string.format('%d', x)
end

-- The sliding window's state as this script writes it: the head and 17
-- counts, each as %d writes it, separated by one space.
local SLIDING = '^(%-?%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$'

-- A sliding window at rest: head 0 and 17 empty sub-windows.
local function slidingFresh()
  return { '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0' }
end

-- Reads any other value as a sliding-window state as the script always
-- has: up to 18 integers separated by white space, a missing count being
-- zero, a field that is no number nil, any further field ignored. No
-- state this script writes comes this way (a key's name holds its zone's
-- algorithm and window), only one written by hand.
local function slidingLoose(raw)
  local c = slidingFresh()
  local k = 1
  for v in string.gmatch(raw, '%S+') do
    if k > NB + 2 then break end
    local n = tonumber(v)
    if n then c[k] = int(n) else c[k] = nil end
    k = k + 1
  end
  return c
end

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- By key index: the key's state as read or last charged (false: none),
-- and, once charged, when that state is at rest.
local states, restAts = {}, {}
local out = { now }
if ARGV[2] ~= '' and now > tonumber(ARGV[2]) then
  return out
end

local p = 4

for _ = 1, tonumber(ARGV[3]) do -- each request
  local zones = tonumber(ARGV[p])
  p = p + 1
  local base = #out
  out[base + 1] = 1
  local writes = {}
  local admitted = true
  local peek = false

  for i = 1, zones do
    local ki = tonumber(ARGV[p])
    local algo = tonumber(ARGV[p + 1])
    local events = tonumber(ARGV[p + 2])
    local w = tonumber(ARGV[p + 3])
    local burst = tonumber(ARGV[p + 4])
    local cost = tonumber(ARGV[p + 5])
    local flags = ARGV[p + 6]
    local dry = flags == '1' or flags == '3'
    if flags == '2' or flags == '3' then peek = true end
    p = p + 7
    local raw = states[ki]
    if raw == nil then
      raw = redis.call('GET', KEYS[ki])
      states[ki] = raw
    end
    local allowed, remaining, reset, retry, wait = 0, 0, 0, 0, 0
    local state, restAt
    local undoSlot, undoValue -- how to take a sliding window's charge back

    if algo == 0 then
      -- sliding window: 17 sub-window counts and the newest index, kept as
      -- the text "head c0 c1 ... c16". c[1] is the head and c[2 + s] the
      -- count of slot s, sub-window j being in slot j % 17. The fields stay
      -- the strings read: arithmetic converts them, and the state is written
      -- back by joining them, with only the changed ones formatted anew.
      -- Parsing and formatting 18 numbers each were most of the cost, so
      -- the table read is kept for the batch's later requests on the key
      -- and joined once, when the key is written.
      -- The window over 16, rounded up, as internal/limiter's subWindow.
      local q = floordiv(w + NB - 1, NB)
      local idx = floordiv(now, q)
      local c
      if type(raw) == 'table' then
        c = raw
      elseif raw then
        c = { string.match(raw, SLIDING) }
        if c[1] == nil then c = slidingLoose(raw) end
      else
        c = slidingFresh()
      end
      -- Moving the window on changes nothing that counts: the table may
      -- serve the batch's next request whatever this one's fate.
      states[ki] = c
      local head = tonumber(c[1])
      local total = 0
      if idx > head + NB then
        for s = 2, NB + 2 do c[s] = '0' end
        head = idx
        c[1] = int(head)
      else
        if idx > head then
          for j = head + 1, idx do c[j % (NB + 1) + 2] = '0' end
          head = idx
          c[1] = int(head)
        end
        for s = 2, NB + 2 do total = total + c[s] end
      end
      reset = (head + 1 + NB) * q - now
      if total + cost > events then
        remaining = math.max(events - total, 0)
        if cost > events then
          retry = -1
        else
          retry = (head + 1 + NB) * q - now
          local left = total
          for j = head - NB, head do
            left = left - c[j % (NB + 1) + 2]
            if left + cost <= events then
              retry = (j + 1 + NB) * q - now
              break
            end
          end
        end
      else
        allowed = 1
        local s = head % (NB + 1) + 2
        undoSlot, undoValue = s, c[s]
        c[s] = int(c[s] + cost)
        remaining = events - total - cost
        state = c
        restAt = (head + 1 + NB) * q
      end

    elseif algo == 1 then
      -- fixed window: the window's index and its count
      local idx = floordiv(now, w)
      local n = 0
      if raw then
        local sa, sn = string.match(raw, '(%S+) (%S+)')
        sa = tonumber(sa)
        -- A time before the stored window counts in it.
        if sa >= idx then idx, n = sa, tonumber(sn) end
      end
      local a = idx
      reset = (idx + 1) * w - now
      if n + cost > events then
        remaining = math.max(events - n, 0)
        if cost > events then retry = -1 else retry = reset end
      else
        allowed = 1
        n = n + cost
        remaining = events - n
        state = string.format('%d %d', a, n)
        restAt = (idx + 1) * w
      end

    else
      -- token bucket and leaky bucket: GCRA over one arrival time
      local t = math.floor((w + events - 1) / events)
      if t * events < w then t = t + 1 end
      if (t - 1) * events >= w then t = t - 1 end
      local tolerance = burst * t
      local tat = now
      if raw then tat = math.max(tonumber(raw), now) end
      if cost > burst then
        remaining = math.max(floordiv(tolerance - (tat - now), t), 0)
        reset = tat - now
        retry = -1
      elseif algo == 3 then
        local delay = tat - now
        if delay > tolerance then
          reset = tat - now
          retry = delay - tolerance
        else
          allowed = 1
          local nxt = tat + cost * t
          remaining = math.max(floordiv(tolerance - (nxt - now), t) + 1, 0)
          reset = nxt - now
          wait = delay
          state = int(nxt)
          restAt = nxt
        end
      else
        local nxt = tat + cost * t
        if nxt - now > tolerance then
          remaining = math.max(floordiv(tolerance - (tat - now), t), 0)
          reset = tat - now
          retry = nxt - tolerance - now
        else
          allowed = 1
          remaining = floordiv(tolerance - (nxt - now), t)
          reset = nxt - now
          state = int(nxt)
          restAt = nxt
        end
      end
    end

    if allowed == 0 and not dry then admitted = false end
    -- A request at cost zero changes nothing worth writing.
    if allowed == 1 and cost > 0 then
      writes[#writes + 1] = { ki, state, restAt, cost, i, undoSlot, undoValue }
    elseif undoSlot then
      state[undoSlot] = undoValue
    end
    local r = base + 1 + (i - 1) * 5
    out[r + 1] = allowed
    out[r + 2] = remaining
    out[r + 3] = reset
    out[r + 4] = retry
    out[r + 5] = wait
  end

  if peek then admitted = false end
  if admitted then
    for k = 1, #writes do
      local wr = writes[k]
      states[wr[1]] = wr[2]
      restAts[wr[1]] = wr[3]
    end
  else
    out[base + 1] = 0
    -- Nothing is charged: a zone that would have admitted keeps what it had.
    for k = 1, #writes do
      local wr = writes[k]
      local r = base + 1 + (wr[5] - 1) * 5 + 2
      out[r] = out[r] + wr[4]
      if wr[6] then wr[2][wr[6]] = wr[7] end
    end
  end
end

for ki, restAt in pairs(restAts) do
  local state = states[ki]
  if type(state) == 'table' then state = table.concat(state, ' ') end
  -- The key expires exactly when its last state is back at rest.
  redis.call('SET', KEYS[ki], state, 'PXAT', int(math.floor((restAt + 999) / 1000)))
end
return out
