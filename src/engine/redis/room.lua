-- roomcast's room state in Redis: one script, one operation per call
-- (ARGV[1]), so that every change to a room, the `seq` and event counter
-- it takes and the PUBLISH that tells the nodes happen in one atomic step
-- (docs/architecture.md, "The Redis engine"). Keys it touches, per DB:
--
--   rc:{R}           hash  ep (epoch), seq (last message), ev (last event), run (server run id)
--   rc:{R}:h         list  retained messages, oldest first, JSON, seq contiguous up to `seq`
--   rc:{R}:u         hash  present user -> connections; '#n' members; '#r' chat members
--   rc:{R}:m:NODE    hash  'W|user', 'W|#n', 'W|#r': NODE's worker W's share of rc:{R}:u
--   rc:n:NODE:r      set   rooms NODE has members in
--   rc:n:NODE:u      set   users NODE has /ws connections of
--   rc:u:USER        hash  'NODE.W' -> /ws connections of USER on that worker
--   rc:nodes         zset  NODE -> the time (ms) by which it must beat again
--
-- Channels: CH..'r:'..R carries a room's events, CH..'n:'..NODE a node's
-- direct messages ("W,W USER EVENT") and disconnects ("! CODE USER"). A
-- room event is "EV EPOCH KIND SKIP BODY".

local op = ARGV[1]
local CH = ARGV[2]
local NODE = ARGV[3]
local RUN = ARGV[4]
local CAND = ARGV[5]
local HCOUNT = tonumber(ARGV[6])
local HTTL = tonumber(ARGV[7])
local TIMEOUT = tonumber(ARGV[8])
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function K(room) return 'rc:{' .. room .. '}' end

-- No members: the room expires after HTTL of idleness (0: never).
local function idle(room)
  if HTTL > 0 then
    redis.call('PEXPIRE', K(room), HTTL)
    redis.call('PEXPIRE', K(room) .. ':h', HTTL)
  end
end

local function busy(room)
  redis.call('PERSIST', K(room))
  redis.call('PERSIST', K(room) .. ':h')
end

-- The room's position; a room that is gone (expired, flushed) or was
-- restored by a restarted server starts a new epoch.
local function open(room)
  local k = K(room)
  local m = redis.call('HMGET', k, 'ep', 'seq', 'ev', 'run')
  if not m[1] then
    redis.call('DEL', k .. ':h')
    redis.call('HSET', k, 'ep', CAND, 'seq', 0, 'ev', 0, 'run', RUN)
    idle(room)
    return {ep = CAND, seq = 0, ev = 0}
  end
  if m[4] ~= RUN then
    -- Restored from disk: messages near the end may be lost and `seq`
    -- may repeat, so this is another history.
    redis.call('HSET', k, 'ep', CAND, 'run', RUN)
    m[1] = CAND
  end
  return {ep = m[1], seq = tonumber(m[2]), ev = tonumber(m[3])}
end

local function emit(room, r, kind, skip, body)
  r.ev = redis.call('HINCRBY', K(room), 'ev', 1)
  redis.call('PUBLISH', CH .. 'r:' .. room, r.ev .. ' ' .. r.ep .. ' ' .. kind .. ' ' .. skip .. ' ' .. body)
end

local function trim_age(room)
  if HTTL <= 0 then return end
  local h = K(room) .. ':h'
  for _ = 1, 1000 do
    local first = redis.call('LINDEX', h, 0)
    if not first then return end
    local ts = tonumber(string.match(first, '"ts":(%d+)'))
    if ts and ts < NOW - HTTL then redis.call('LPOP', h) else return end
  end
end

-- Retained messages with seq > since (at most `count`, oldest first) and
-- whether they start right after `since`.
local function after(room, r, since, count)
  if since >= r.seq then return {}, since == r.seq end
  local h = K(room) .. ':h'
  local first = r.seq - redis.call('LLEN', h) + 1
  local idx = since + 1 - first
  local whole = idx >= 0
  if idx < 0 then idx = 0 end
  local stop = -1
  if count then
    if count <= 0 then return {}, whole end
    stop = idx + count - 1
  end
  return redis.call('LRANGE', h, idx, stop), whole
end

local function num(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end

-- Lowers a count, never below 0 (the field goes at 0); -1 if there was none.
local function dec(key, field)
  local v = num(key, field)
  if v <= 0 then return -1 end
  if v == 1 then redis.call('HDEL', key, field); return 0 end
  redis.call('HSET', key, field, v - 1)
  return v - 1
end

local function users_of(room)
  local out = {}
  for _, f in ipairs(redis.call('HKEYS', K(room) .. ':u')) do
    if string.byte(f, 1) ~= 35 then out[#out + 1] = f end
  end
  table.sort(out)
  return out
end

local function roster(room, r)
  if num(K(room) .. ':u', '#r') > 0 then
    emit(room, r, 'o', '-', table.concat(users_of(room), ','))
  end
end

local function registered()
  return redis.call('ZSCORE', 'rc:nodes', NODE)
end

-- Removes every trace of a node that stopped beating (or is leaving):
-- its members leave their rooms (user_left where it held a user's last
-- connection), its users' connections go.
local function reap(dead)
  for _, room in ipairs(redis.call('SMEMBERS', 'rc:n:' .. dead .. ':r')) do
    local pk, mk = K(room) .. ':u', K(room) .. ':m:' .. dead
    local fields = redis.call('HGETALL', mk)
    if #fields > 0 then
      local r = open(room)
      local gone, names = {}, {}
      for i = 1, #fields, 2 do
        local name = string.sub(fields[i], string.find(fields[i], '|', 1, true) + 1)
        if not gone[name] then names[#names + 1] = name; gone[name] = 0 end
        gone[name] = gone[name] + tonumber(fields[i + 1])
      end
      redis.call('DEL', mk)
      table.sort(names)
      local changed = false
      for _, name in ipairs(names) do
        if gone[name] > 0 and redis.call('HINCRBY', pk, name, -gone[name]) <= 0 then
          redis.call('HDEL', pk, name)
          if string.byte(name, 1) ~= 35 then
            emit(room, r, 'l', '-', name)
            changed = true
          end
        end
      end
      if changed then roster(room, r) end
      if num(pk, '#n') == 0 then idle(room) end
    end
  end
  redis.call('DEL', 'rc:n:' .. dead .. ':r')
  local prefix = dead .. '.'
  for _, user in ipairs(redis.call('SMEMBERS', 'rc:n:' .. dead .. ':u')) do
    local uk = 'rc:u:' .. user
    local all = redis.call('HGETALL', uk)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, #prefix) == prefix then redis.call('HDEL', uk, all[i]) end
    end
  end
  redis.call('DEL', 'rc:n:' .. dead .. ':u')
  redis.call('ZREM', 'rc:nodes', dead)
end

if op == 'register' then
  redis.call('ZADD', 'rc:nodes', NOW + TIMEOUT, NODE)
  return 1

elseif op == 'heartbeat' then
  if not registered() then return {0, 0} end
  redis.call('ZADD', 'rc:nodes', 'XX', NOW + TIMEOUT, NODE)
  local dead = redis.call('ZRANGEBYSCORE', 'rc:nodes', '-inf', '(' .. NOW, 'LIMIT', 0, 8)
  for _, node in ipairs(dead) do reap(node) end
  return {1, #dead}

elseif op == 'deregister' then
  reap(NODE)
  return 1

elseif op == 'join' then
  -- room, worker, user, present, roster, skip, again, since, since epoch
  local room, w, user = ARGV[9], ARGV[10], ARGV[11]
  local present, chat, skip, again = ARGV[12] == '1', ARGV[13] == '1', ARGV[14], ARGV[15] == '1'
  if not registered() then return redis.error_reply('REAPED this node was declared dead') end
  local r = open(room)
  trim_age(room)
  local rec, missed = -1, {}
  if ARGV[16] ~= '' then
    local since, sep = tonumber(ARGV[16]), ARGV[17]
    rec = 0
    if since <= r.seq and (sep == '' or sep == r.ep) then
      local whole
      missed, whole = after(room, r, since)
      if whole and sep == r.ep then rec = 1 end
    end
  end
  local first = false
  if not again then
    local pk, mk = K(room) .. ':u', K(room) .. ':m:' .. NODE
    redis.call('HINCRBY', pk, '#n', 1)
    redis.call('HINCRBY', mk, w .. '|#n', 1)
    if chat then
      redis.call('HINCRBY', pk, '#r', 1)
      redis.call('HINCRBY', mk, w .. '|#r', 1)
    end
    if present then
      redis.call('HINCRBY', mk, w .. '|' .. user, 1)
      first = redis.call('HINCRBY', pk, user, 1) == 1
    end
    redis.call('SADD', 'rc:n:' .. NODE .. ':r', room)
    busy(room)
  end
  local users = users_of(room)
  local ev0 = r.ev
  if first then
    if chat then skip = '-' end
    emit(room, r, 'j', skip, user)
  end
  if not again and present then roster(room, r) end
  return {ev0, r.ev, r.seq, r.ep, users, rec, missed}

elseif op == 'leave' then
  -- room, worker, user, present, roster
  local room, w, user = ARGV[9], ARGV[10], ARGV[11]
  local present, chat = ARGV[12] == '1', ARGV[13] == '1'
  local pk, mk = K(room) .. ':u', K(room) .. ':m:' .. NODE
  local r = open(room)
  local ev0 = r.ev
  if dec(mk, w .. '|#n') >= 0 then
    dec(pk, '#n')
    if chat and dec(mk, w .. '|#r') >= 0 then dec(pk, '#r') end
    if present and dec(mk, w .. '|' .. user) >= 0 and dec(pk, user) == 0 then
      emit(room, r, 'l', '-', user)
    end
    if present then roster(room, r) end
  end
  if redis.call('EXISTS', mk) == 0 then redis.call('SREM', 'rc:n:' .. NODE .. ':r', room) end
  if num(pk, '#n') == 0 then idle(room) end
  return {ev0, r.ev}

elseif op == 'publish' then
  -- room, the message's JSON fields after seq and ts
  local room = ARGV[9]
  local r = open(room)
  trim_age(room)
  local ev0 = r.ev
  r.seq = redis.call('HINCRBY', K(room), 'seq', 1)
  local entry = '{"seq":' .. r.seq .. ',"ts":' .. NOW .. ',' .. ARGV[10] .. '}'
  if HCOUNT > 0 then
    local h = K(room) .. ':h'
    redis.call('RPUSH', h, entry)
    redis.call('LTRIM', h, -HCOUNT, -1)
  end
  if redis.call('PTTL', K(room)) > 0 then idle(room) end
  emit(room, r, 'm', '-', entry)
  return {ev0, r.ev, r.seq}

elseif op == 'typing' then
  -- room, user, typing, skip
  local room = ARGV[9]
  local r = open(room)
  local ev0 = r.ev
  emit(room, r, 't', ARGV[12], ARGV[11] .. ' ' .. ARGV[10])
  return {ev0, r.ev}

elseif op == 'relay' then
  local room = ARGV[9]
  local r = open(room)
  local ev0 = r.ev
  emit(room, r, 'b', '-', ARGV[10])
  return {ev0, r.ev}

elseif op == 'presence' then
  local room = ARGV[9]
  local r = open(room)
  return {r.ev, users_of(room)}

elseif op == 'history' then
  -- room, since ('' for none), limit ('' for none)
  local room = ARGV[9]
  local r = open(room)
  trim_age(room)
  local since, limit = tonumber(ARGV[10]), tonumber(ARGV[11])
  local entries
  if since then
    entries = after(room, r, since, limit)
  elseif limit then
    if limit <= 0 then entries = {} else
      entries = redis.call('LRANGE', K(room) .. ':h', -limit, -1)
    end
  else
    entries = after(room, r, 0)
  end
  return {r.ev, entries}

elseif op == 'online' then
  -- user, worker
  if not registered() then return redis.error_reply('REAPED this node was declared dead') end
  redis.call('HINCRBY', 'rc:u:' .. ARGV[9], NODE .. '.' .. ARGV[10], 1)
  redis.call('SADD', 'rc:n:' .. NODE .. ':u', ARGV[9])
  return 1

elseif op == 'offline' then
  dec('rc:u:' .. ARGV[9], NODE .. '.' .. ARGV[10])
  return 1

elseif op == 'direct' then
  -- user, the encoded event: once to each live node with a connection of the user
  local user = ARGV[9]
  local all = redis.call('HGETALL', 'rc:u:' .. user)
  local workers, nodes = {}, {}
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) > 0 then
      local dot = string.find(all[i], '.', 1, true)
      local node = string.sub(all[i], 1, dot - 1)
      if not workers[node] then workers[node] = {}; nodes[#nodes + 1] = node end
      table.insert(workers[node], string.sub(all[i], dot + 1))
    end
  end
  local sent = 0
  for _, node in ipairs(nodes) do
    local deadline = redis.call('ZSCORE', 'rc:nodes', node)
    if deadline and tonumber(deadline) >= NOW then
      redis.call('PUBLISH', CH .. 'n:' .. node, table.concat(workers[node], ',') .. ' ' .. user .. ' ' .. ARGV[10])
      sent = sent + 1
    end
  end
  return sent

elseif op == 'disconnect' then
  -- user, close code: to every other live node (the caller closes its
  -- own node's connections itself); returns how many were told
  local sent = 0
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', 'rc:nodes', NOW, '+inf')) do
    if node ~= NODE then
      redis.call('PUBLISH', CH .. 'n:' .. node, '! ' .. ARGV[10] .. ' ' .. ARGV[9])
      sent = sent + 1
    end
  end
  return sent

elseif op == 'rooms' then
  -- every room of this server with members on any node: room, members,
  -- present users, ... (a scan of the rooms with members, for the API)
  local seen, out = {}, {}
  for _, node in ipairs(redis.call('ZRANGE', 'rc:nodes', 0, -1)) do
    for _, room in ipairs(redis.call('SMEMBERS', 'rc:n:' .. node .. ':r')) do
      if not seen[room] then
        seen[room] = true
        local pk = K(room) .. ':u'
        local members = num(pk, '#n')
        if members > 0 then
          out[#out + 1] = room
          out[#out + 1] = members
          out[#out + 1] = #users_of(room)
        end
      end
    end
  end
  return out

elseif op == 'resync' then
  -- room, worker, members, chat members, last seq seen, its epoch, then
  -- (user, connections) pairs: this worker's share of the room as it is
  -- now, after a reconnect; answers what the worker missed since `seq`.
  local room, w = ARGV[9], ARGV[10]
  local pk, mk = K(room) .. ':u', K(room) .. ':m:' .. NODE
  local prefix = w .. '|'
  local r = open(room)
  trim_age(room)
  local rec, missed = 0, {}
  local since, sep = tonumber(ARGV[13]), ARGV[14]
  if since and since <= r.seq and sep == r.ep then
    local whole
    missed, whole = after(room, r, since)
    if whole then rec = 1 end
  end
  local have = {}
  local fields = redis.call('HGETALL', mk)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, #prefix) == prefix then
      have[string.sub(fields[i], #prefix + 1)] = tonumber(fields[i + 1])
    end
  end
  -- Sets this worker's count of `name` to `want`; returns the room's
  -- total before and after.
  local function set(name, want)
    local old = have[name] or 0
    have[name] = nil
    if want == old then return 0, 0 end
    if want > 0 then redis.call('HSET', mk, prefix .. name, want) else redis.call('HDEL', mk, prefix .. name) end
    local after_ = redis.call('HINCRBY', pk, name, want - old)
    if after_ <= 0 then redis.call('HDEL', pk, name) end
    return after_ - (want - old), after_
  end
  set('#n', tonumber(ARGV[11]))
  set('#r', tonumber(ARGV[12]))
  local ev0 = r.ev
  local changed = false
  for i = 15, #ARGV, 2 do
    local before, now = set(ARGV[i], tonumber(ARGV[i + 1]))
    if before <= 0 and now > 0 then emit(room, r, 'j', '-', ARGV[i]); changed = true end
  end
  local stale = {}
  for name, _ in pairs(have) do stale[#stale + 1] = name end
  table.sort(stale)
  for _, name in ipairs(stale) do
    local before, now = set(name, 0)
    if string.byte(name, 1) ~= 35 and before > 0 and now <= 0 then
      emit(room, r, 'l', '-', name)
      changed = true
    end
  end
  if changed then roster(room, r) end
  if redis.call('EXISTS', mk) == 1 then
    redis.call('SADD', 'rc:n:' .. NODE .. ':r', room)
    busy(room)
  else
    redis.call('SREM', 'rc:n:' .. NODE .. ':r', room)
    if num(pk, '#n') == 0 then idle(room) end
  end
  return {ev0, r.ev, r.seq, r.ep, rec, missed}

elseif op == 'restore_users' then
  -- worker, clear first (1/0), then (user, connections) pairs
  local field = NODE .. '.' .. ARGV[9]
  if ARGV[10] == '1' then
    for _, user in ipairs(redis.call('SMEMBERS', 'rc:n:' .. NODE .. ':u')) do
      redis.call('HDEL', 'rc:u:' .. user, field)
    end
  end
  for i = 11, #ARGV, 2 do
    redis.call('HSET', 'rc:u:' .. ARGV[i], field, ARGV[i + 1])
    redis.call('SADD', 'rc:n:' .. NODE .. ':u', ARGV[i])
  end
  return 1
end
return redis.error_reply('ERR unknown roomcast operation ' .. tostring(op))
