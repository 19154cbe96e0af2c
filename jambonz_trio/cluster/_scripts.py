"""The cluster's keys and Lua scripts (one hash tag per namespace: every key in one slot).

Keys, for namespace ``NS`` (``P`` = ``jt:{NS}``):

============================  ======  ==========================================================
``P:members``                 ZSET    member id -> expiry (ms, Redis' own clock: no client skew)
``P:calls``                   HASH    call_sid -> JSON summary (``ClusterCall``), with its member
                                      (and, written by a re-registration, its ``copy``:
                                      ``ranked_doc``)
``P:member:<id>:calls``       SET     the call_sids a member registered
``P:member:<id>:inbox``       STREAM  commands to the member, replies to its requests, notices
                                      (a call taken over: ``moved``) (capped)
``P:events``                  STREAM  call start / update / end, for watchers (capped)
``P:orphans``                 ZSET    call_sid -> until when (ms) its owner is known dead
``P:userdata``                HASH    call_sid -> the call's stored ``user_data`` (opt-in), JSON
                                      with the identity a reconnect must match, and
                                      ``confirmed`` when jambonz read an answer of the call
                                      (also without user_data: a drain's hand-over)
============================  ======  ==========================================================

A member's inbox also carries the frames of the calls relayed to or from it (see
:mod:`._relay`): one ordered stream per receiving member, no stream per call.

Every member's heartbeat (every ``member_ttl / 3``) moves its expiry and re-arms a
``PEXPIRE`` of the shared keys, and a script that creates one of them gives it that expiry at
once (:data:`_ARM`), so a cluster whose members all died leaves nothing behind;
every member also sweeps: a member past its expiry loses its calls (each gets an ``end`` event
and an orphan mark) and its keys; a stored ``user_data`` is kept while its call's orphan mark
lasts (a reconnect landing elsewhere restores it), then removed; the member that registers the
call again takes the record over (UPSERT), so that its removal or its sweep removes it.
"""

from __future__ import annotations

__all__ = [
    "HAND_OVER",
    "HEARTBEAT",
    "LIVE_MEMBERS",
    "LOOKUP",
    "MEMBER_ALIVE",
    "REPLY",
    "ROUTE_LOOKUP",
    "STORE_USER_DATA",
    "SWEEP",
    "UPSERT",
    "Keys",
]

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

#: ``arm(ttl, key, ...)``: give the keys a script may have created (they have no expiry) the
#: shared keys' expiry, ``ttl`` ms: the members zset's (``PTTL KEYS[1]``), which every beat
#: re-arms. A heartbeat's ``PEXPIRE`` of a key that does not exist yet does nothing, so a key
#: created between two beats of the last member alive would otherwise outlive the cluster.
_ARM = """
local function arm(ttl, ...)
  if ttl <= 0 then return end
  for _, key in ipairs({...}) do
    if redis.call('PTTL', key) == -1 then redis.call('PEXPIRE', key, ttl) end
  end
end
"""

#: KEYS: members, calls, events, orphans, userdata, my inbox, my calls set
#: ARGV: me, ttl_ms, idle_ms, inbox_maxlen
#: -> {1 if I was registered and alive else 0, Redis' clock (ms): the clock of the stream ids,
#: which members use to date the entries of their inboxes (no client clock compared), the id of
#: the last entry of my inbox}
HEARTBEAT = (
    _NOW
    + """
local now = now_ms()
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('EXISTS', KEYS[6]) == 0 then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*', 'm', '{"k":"hello"}')
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
local top = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)[1][1]
if old and tonumber(old) > now then return {1, now, top} end
return {0, now, top}
"""
)

#: ``record_free(userdata, sid, me)``: whether the call's stored record is none or names
#: ``me`` (an unreadable one counts as none). Under no entry, a record naming another member is
#: the one that member kept for the call's reconnect (its hand-over, or its sweep once it died:
#: the holder's, newer than any stale copy elsewhere); a put re-tags it (``UPSERT``).
_RECORD_FREE = """
local function record_free(userdata, sid, me)
  local ud = redis.call('HGET', userdata, sid)
  if not ud then return true end
  local ok, record = pcall(cjson.decode, ud)
  return not ok or type(record) ~= 'table' or record['member'] == me
end
"""

#: ``outranks(mine, theirs)``: of two members' copies of one call, as the ``copy`` objects of
#: their re-registrations describe them (``ranked_doc``), whether mine is the one jambonz talks
#: to: the socket bound last (jambonz has one socket per call at a time; bind times are on
#: Redis' clock, so members' clocks are never compared), then, bound at the same time, a
#: connected copy over a parked one; a full tie keeps the entry where it is.
_OUTRANKS = """
local function outranks(mine, theirs)
  local mb, tb = tonumber(mine['bound']) or 0, tonumber(theirs['bound']) or 0
  if mb ~= tb then return mb > tb end
  return mine['connected'] == true and theirs['connected'] ~= true
end
"""

#: KEYS: members, calls, events, orphans, my calls set, userdata
#: ARGV: me, member key prefix, events_maxlen, inbox_maxlen, then pairs (call_sid, JSON, or
#: '?' + JSON to re-register a call unchanged since its last write, or '' to remove the entry
#: and its stored user_data, or '~' to remove the entry only: a call handed over)
#: Removal only removes an entry (and user_data) that is still mine; a put takes the sid over from another
#: member (the newest socket of a call is where jambonz talks), and with it the call's stored
#: user_data (its record is re-tagged mine: the orphan mark that would have swept it goes, and
#: my removal or my sweep removes it now, even before I store my own; its ``confirmed`` goes
#: too: only the member serving the call states that jambonz read an answer of it). The entries of a full
#: re-registration carry a ``copy`` (``ranked_doc``): one meeting another member's entry that
#: carries one too (both members re-registered: Redis restarted empty, say) takes it over only
#: if it outranks it (``_OUTRANKS``), and then tells that member (a ``moved`` entry in its
#: inbox, with the ``bound`` of the copy taken over: it ends that copy, not one bound since);
#: it is refused (nothing written) otherwise. A '?' re-registration
#: meeting another member's plain entry (written for a socket bound there since) is refused.
#: -> {number of changes, then the sids of the re-registrations refused}, or -1 (nothing written)
#: when I am not registered: swept while unreachable, or gone - a write arriving late must not
#: leave entries no sweep would ever find.
UPSERT = (
    _ARM
    + _OUTRANKS
    + """
local me, prefix, maxlen = ARGV[1], ARGV[2], ARGV[3]
if not redis.call('ZSCORE', KEYS[1], me) then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
local changed, refused = 0, {}
for i = 5, #ARGV, 2 do
  local sid, doc = ARGV[i], ARGV[i + 1]
  local prev = redis.call('HGET', KEYS[2], sid)
  local owner, theirs = false, nil
  if prev then
    local entry = cjson.decode(prev)
    owner, theirs = entry['member'], entry['copy']
  end
  if doc == '' or doc == '~' then
    if prev and owner == me then
      redis.call('HDEL', KEYS[2], sid)
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*',
                 'e', 'end', 'sid', sid, 'member', me, 'why', 'ended')
      changed = changed + 1
    end
    if doc == '' then
      local ud = redis.call('HGET', KEYS[6], sid)
      if ud and cjson.decode(ud)['member'] == me then redis.call('HDEL', KEYS[6], sid) end
    end
    redis.call('SREM', KEYS[5], sid)
  else
    local rereg = doc:sub(1, 1) == '?'
    if rereg then doc = doc:sub(2) end
    local verdict = 'put'
    if owner and owner ~= me then
      local mine = cjson.decode(doc)['copy']
      if type(mine) == 'table' and type(theirs) == 'table' then
        if outranks(mine, theirs) then verdict = 'tell' else verdict = 'refuse' end
      elseif rereg then
        verdict = 'refuse'
      end
    end
    if verdict == 'refuse' then
      refused[#refused + 1] = sid
    else
      if verdict == 'tell' then
        local inbox = prefix .. owner .. ':inbox'
        if redis.call('EXISTS', inbox) == 1 then
          redis.call('XADD', inbox, 'MAXLEN', '~', ARGV[4], '*',
                     'm', cjson.encode({k = 'moved', sid = sid, to = me, bound = theirs['bound']}))
        end
      end
      if prev ~= doc then
        if owner and owner ~= me then redis.call('SREM', prefix .. owner .. ':calls', sid) end
        redis.call('HSET', KEYS[2], sid, doc)
        local kind = 'start'
        if prev then kind = 'update' end
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', kind, 'sid', sid, 'call', doc)
        changed = changed + 1
      end
      redis.call('SADD', KEYS[5], sid)
      redis.call('ZREM', KEYS[4], sid)
      local ud = redis.call('HGET', KEYS[6], sid)
      if ud then
        local ok, record = pcall(cjson.decode, ud)
        if ok and type(record) == 'table' and record['member'] ~= me then
          record['member'] = me
          record['confirmed'] = nil
          redis.call('HSET', KEYS[6], sid, cjson.encode(record))
        end
      end
    end
  end
end
arm(ttl, KEYS[2], KEYS[3], KEYS[5])
table.insert(refused, 1, changed)
return refused
"""
)

#: KEYS: members, calls, events, orphans, userdata
#: ARGV: member key prefix, events_maxlen, orphan_keep_ms, a member id ('' = every expired one),
#: optionally '1': keep the member's inbox (a process restarted with the id sweeps what the one
#: before it left, its inbox too may already hold answers for it)
#: -> number of calls removed
SWEEP = (
    _NOW
    + _ARM
    + """
local now = now_ms()
local ttl = redis.call('PTTL', KEYS[1])  -- (before this member's removal may delete the zset)
local gone
if ARGV[4] ~= '' then
  gone = {ARGV[4]}
else
  gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 32)
end
local removed = 0
for _, m in ipairs(gone) do
  local set = ARGV[1] .. m .. ':calls'
  for _, sid in ipairs(redis.call('SMEMBERS', set)) do
    local v = redis.call('HGET', KEYS[2], sid)
    if v and cjson.decode(v)['member'] == m then
      redis.call('HDEL', KEYS[2], sid)
      redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), sid)
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*',
                 'e', 'end', 'sid', sid, 'member', m, 'why', 'owner gone')
      removed = removed + 1
    end
  end
  redis.call('DEL', set)
  if ARGV[5] ~= '1' then redis.call('DEL', ARGV[1] .. m .. ':inbox') end
  redis.call('ZREM', KEYS[1], m)
end
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 256)) do
  if redis.call('HEXISTS', KEYS[2], sid) == 0 then redis.call('HDEL', KEYS[5], sid) end
  redis.call('ZREM', KEYS[4], sid)
end
arm(ttl, KEYS[3], KEYS[4])
return removed
"""
)

#: KEYS: members, calls, orphans   ARGV: call_sid
#: -> {'live', json} | {'dead', json} (its member stopped beating) | {'gone', ''} (swept) | {'none', ''}
LOOKUP = (
    _NOW
    + """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  local exp = redis.call('ZSCORE', KEYS[1], cjson.decode(v)['member'])
  if exp and tonumber(exp) > now_ms() then return {'live', v} end
  return {'dead', v}
end
local o = redis.call('ZSCORE', KEYS[3], ARGV[1])
if o and tonumber(o) > now_ms() then return {'gone', ''} end
return {'none', ''}
"""
)

#: KEYS: members   ARGV: member id -> 1 if it beats, else 0
MEMBER_ALIVE = (
    _NOW
    + """
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if exp and tonumber(exp) > now_ms() then return 1 end
return 0
"""
)

#: KEYS: the requester's inbox   ARGV: message, inbox_maxlen, idle_ms
#: An answer creates the inbox if needed (the requester's own heartbeat may not have re-created
#: it yet after a Redis restart), with an expiry, so an answer to a dead requester goes away.
REPLY = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

#: KEYS: members, calls, orphans, userdata   ARGV: call_sid
#: -> {state, json, user_data record}: LOOKUP's answer and the call's stored user_data ('' if none)
ROUTE_LOOKUP = (
    _NOW
    + """
local ud = redis.call('HGET', KEYS[4], ARGV[1]) or ''
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  local exp = redis.call('ZSCORE', KEYS[1], cjson.decode(v)['member'])
  if exp and tonumber(exp) > now_ms() then return {'live', v, ud} end
  return {'dead', v, ud}
end
local o = redis.call('ZSCORE', KEYS[3], ARGV[1])
if o and tonumber(o) > now_ms() then return {'gone', '', ud} end
return {'none', '', ud}
"""
)

#: KEYS: members, userdata, calls   ARGV: me, then pairs (call_sid, record)
#: Stores the user_data of my calls (a record names its member): only of the calls whose
#: directory entry is mine. A copy of a call that moved away (another member's re-registration
#: took it over, a reconnect started it elsewhere) never writes over what the member holding
#: the call stores; nor does a call whose entry is not written yet (the next beat stores it).
#: -> the sids refused (nothing written for them), or -1 (nothing written) if I am not registered
STORE_USER_DATA = (
    _ARM
    + """
local me = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], me) then return -1 end
local refused = {}
for i = 2, #ARGV, 2 do
  local entry = redis.call('HGET', KEYS[3], ARGV[i])
  if entry and cjson.decode(entry)['member'] == me then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  else
    refused[#refused + 1] = ARGV[i]
  end
end
arm(redis.call('PTTL', KEYS[1]), KEYS[2])
return refused
"""
)

#: KEYS: members, userdata, orphans, calls   ARGV: me, orphan_keep_ms, then pairs (call_sid,
#: record, or '' for none: the orphan mark alone)
#: A draining member hands its calls over: their user_data stored, and an orphan mark that keeps
#: it for orphan_keep once the entry is gone (until a member registers the call again). Only
#: for this member's entry, or for none (Redis restarted empty: also before this member is
#: registered again): an entry naming another member, alive or not yet swept, lists the copy
#: jambonz talks to (the call moved, and the ``moved`` notice or the refused re-registration
#: that ends this stale copy has not come yet); that member's record stays, and its sweep, if
#: it died, marks the call orphaned and keeps the record. (The member's own queued writes of
#: the calls come first: ``Cluster.hand_over``.) Under no entry, a record naming another member
#: is not written over (``_RECORD_FREE``: a dead holder's, kept by its sweep, which the call's
#: reconnect restores): the orphan mark alone. (Under my entry the record is mine: my put
#: re-tagged it.)
#: -> the sids left alone (nothing written for them)
HAND_OVER = (
    _NOW
    + _ARM
    + _RECORD_FREE
    + """
local me, now = ARGV[1], now_ms()
local keep_until = now + tonumber(ARGV[2])
local refused = {}
for i = 3, #ARGV, 2 do
  local sid = ARGV[i]
  local entry = redis.call('HGET', KEYS[4], sid)
  if entry and cjson.decode(entry)['member'] ~= me then
    refused[#refused + 1] = sid
  else
    if ARGV[i + 1] ~= '' and record_free(KEYS[2], sid, me) then
      redis.call('HSET', KEYS[2], sid, ARGV[i + 1])
    end
    redis.call('ZADD', KEYS[3], keep_until, sid)
  end
end
-- (no member left: they are kept orphan_keep)
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = tonumber(ARGV[2]) end
arm(ttl, KEYS[2], KEYS[3])
return refused
"""
)


#: KEYS: members -> the ids of the members that beat
LIVE_MEMBERS = (
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf')
"""
)


class Keys:
    """Key names of one namespace."""

    def __init__(self, namespace: str) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"invalid cluster namespace {namespace!r}")
        self.prefix = f"jt:{{{namespace}}}"
        self.members = f"{self.prefix}:members"
        self.calls = f"{self.prefix}:calls"
        self.events = f"{self.prefix}:events"
        self.orphans = f"{self.prefix}:orphans"
        self.userdata = f"{self.prefix}:userdata"
        self.member_prefix = f"{self.prefix}:member:"

    def member_calls(self, member: str) -> str:
        return f"{self.member_prefix}{member}:calls"

    def inbox(self, member: str) -> str:
        return f"{self.member_prefix}{member}:inbox"

    def listen(self, token: str) -> str:
        """The member that started the listen ``token`` names (a string key with an expiry)."""
        return f"{self.prefix}:listen:{token}"
