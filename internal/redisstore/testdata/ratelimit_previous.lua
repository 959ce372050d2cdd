-- Decides one request against every zone it matched, atomically, with
-- the arithmetic of internal/limiter in microseconds.
--
-- KEYS[i]   the state key of zone i for this request's key
-- ARGV[1]   now in Unix microseconds, or "" for the server's TIME
-- ARGV[1+6(i-1)+1..6]  zone i: algorithm (0 sliding, 1 fixed, 2 token,
--           3 leaky), events, window (µs), burst, cost, dry run (1 or 0)
--
-- Returns { now, admitted, then per zone: allowed, remaining, reset µs,
-- retry µs (-1: never), wait µs }.

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

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local out = { now, 1 }
local writes = {}
local admitted = true

for i = 1, #KEYS do
  local b = 1 + (i - 1) * 6
  local algo = tonumber(ARGV[b + 1])
  local events = tonumber(ARGV[b + 2])
  local w = tonumber(ARGV[b + 3])
  local burst = tonumber(ARGV[b + 4])
  local cost = tonumber(ARGV[b + 5])
  local dry = ARGV[b + 6] == '1'
  local raw = redis.call('GET', KEYS[i])
  local allowed, remaining, reset, retry, wait = 0, 0, 0, 0, 0
  local state, restAt

  if algo == 0 then
    -- sliding window: 17 sub-window counts and the newest index
    local q = floordiv(w, NB)
    local head, counts = 0, {}
    for j = 0, NB do counts[j] = 0 end
    if raw then
      local k = -1
      for v in string.gmatch(raw, '%S+') do
        if k < 0 then head = tonumber(v) else counts[k] = tonumber(v) end
        k = k + 1
      end
    end
    local idx = floordiv(now, q)
    if idx > head then
      if idx - head > NB then
        for j = 0, NB do counts[j] = 0 end
      else
        for j = head + 1, idx do counts[j % (NB + 1)] = 0 end
      end
      head = idx
    end
    local total = 0
    for j = 0, NB do total = total + counts[j] end
    reset = (head + 1) * q + w - now
    if total + cost > events then
      remaining = math.max(events - total, 0)
      if cost > events then
        retry = -1
      else
        retry = (head + 1) * q + w - now
        local left = total
        for j = head - NB, head do
          left = left - counts[j % (NB + 1)]
          if left + cost <= events then
            retry = (j + 1) * q + w - now
            break
          end
        end
      end
    else
      allowed = 1
      counts[head % (NB + 1)] = counts[head % (NB + 1)] + cost
      remaining = events - total - cost
      local parts = { int(head) }
      for j = 0, NB do parts[#parts + 1] = int(counts[j]) end
      state = table.concat(parts, ' ')
      restAt = (head + 1) * q + w
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
      state = int(a) .. ' ' .. int(n)
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
  if allowed == 1 then writes[#writes + 1] = { KEYS[i], state, restAt, cost, i } end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
  out[#out + 1] = wait
end

if admitted then
  for _, wr in ipairs(writes) do
    -- The key expires exactly when its state is back at rest.
    redis.call('SET', wr[1], wr[2], 'PXAT', int(math.floor((wr[3] + 999) / 1000)))
  end
else
  out[2] = 0
  -- Nothing is charged: a zone that would have admitted keeps what it had.
  for _, wr in ipairs(writes) do
    local r = 2 + (wr[5] - 1) * 5 + 2
    out[r] = out[r] + wr[4]
  end
end
return out
