-- wrk script for tests/load/run.py: a fixed mix of registry pull requests, and a
-- check of every answer against the bodies the harness prepared.
--
--   wrk -t2 -c256 -d60s -s tests/load/mix.lua http://127.0.0.1:PORT -- DIR
--
-- DIR (written by run.py) holds:
--   requests.txt   one file name per line: each file is one raw HTTP/1.1 request
--                  (so an Accept header may repeat, as Docker sends it); the list is
--                  the mix, each thread walks it round-robin from its own offset
--   allowed.txt    "STATUS<TAB>CONTENT-TYPE<TAB>FILE" per line: FILE's bytes are a
--                  body that may come back with that status and Content-Type
-- A response counts as "ok" when its (status, Content-Type, body) is one of those;
-- otherwise as "stitched" (see is_stitched: a wrk artifact after a read error), "wrong"
-- if its status is 2xx (a body that must not be served: torn, mixed, stale bytes...) or
-- "err" (an error status nobody asked for). Up to 5 of each class per thread are
-- written to DIR/bad-<class>-<thread>-<n> for the report.
-- done() prints "wrk-result KEY VALUE" lines that run.py parses.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   table.insert(threads, thread)
   next_id = next_id + 1
end

local function slurp(path)
   local f = assert(io.open(path, "rb"))
   local s = f:read("*a")
   f:close()
   return s
end

local reqs = {}
local allowed = {}
local all_bodies = {}
local pos = 0
local dir = nil

function init(args)
   dir = args[1]
   for name in io.lines(dir .. "/requests.txt") do
      if name ~= "" then
         table.insert(reqs, slurp(dir .. "/" .. name))
      end
   end
   for line in io.lines(dir .. "/allowed.txt") do
      local status, ctype, file = line:match("^(%d+)\t([^\t]*)\t(.+)$")
      if status then
         local key = status .. " " .. ctype
         local body = slurp(dir .. "/" .. file)
         allowed[key] = allowed[key] or {}
         allowed[key][body] = true
         table.insert(all_bodies, body)
      end
   end
   -- Spread the threads over the mix.
   pos = ((id or 1) * 7) % #reqs
   -- Globals, read by done() through thread:get().
   ok = 0
   wrong = 0
   err = 0
   stitched = 0
   statuses = {}
   ok_statuses = {}
   bad_kinds = {}
   saved = {wrong = 0, err = 0, stitched = 0}
end

-- wrk 4.1 does not empty a connection's body buffer when a read fails in the middle of
-- a body (it reconnects, and the next answer's body is appended to the leftover). Such a
-- body is an allowed body preceded by beginnings of allowed bodies: it was never served,
-- and counts as "stitched", not "wrong" (the read error itself is counted by wrk).
local function common_prefix(a, b)
   local lo, hi = 0, math.min(#a, #b)
   while lo < hi do
      local mid = math.floor((lo + hi + 1) / 2)
      if a:sub(1, mid) == b:sub(1, mid) then
         lo = mid
      else
         hi = mid - 1
      end
   end
   return lo
end

local function only_beginnings(head)
   for _ = 1, 10 do
      if #head == 0 then
         return true
      end
      local best = 0
      for _, any in ipairs(all_bodies) do
         best = math.max(best, common_prefix(head, any))
      end
      if best == 0 then
         return false
      end
      head = head:sub(best + 1)
   end
   return #head == 0
end

local function is_stitched(set, body)
   for good in pairs(set) do
      if #body > #good and body:sub(-#good) == good and only_beginnings(body:sub(1, #body - #good)) then
         return true
      end
   end
   return false
end

function request()
   pos = pos % #reqs + 1
   return reqs[pos]
end

function response(status, headers, body)
   local ctype = headers["Content-Type"] or headers["content-type"] or ""
   local s = tostring(status)
   statuses[s] = (statuses[s] or 0) + 1
   local set = allowed[s .. " " .. ctype]
   if set and set[body] then
      ok = ok + 1
      ok_statuses[s] = (ok_statuses[s] or 0) + 1
      return
   end
   local class
   if set and is_stitched(set, body) then
      class = "stitched"
      stitched = stitched + 1
   elseif status >= 200 and status < 300 then
      class = "wrong"
      wrong = wrong + 1
   else
      class = "err"
      err = err + 1
   end
   local kind = class .. " " .. s .. " " .. ctype .. " " .. #body .. " bytes"
   bad_kinds[kind] = (bad_kinds[kind] or 0) + 1
   if saved[class] < 5 then
      saved[class] = saved[class] + 1
      local f = io.open(dir .. "/bad-" .. class .. "-" .. tostring(id) .. "-" .. saved[class], "wb")
      if f then
         f:write(s, " ", ctype, "\n", body)
         f:close()
      end
   end
end

function done(summary, latency, requests)
   local out = {}
   local function put(k, v)
      table.insert(out, "wrk-result " .. k .. " " .. tostring(v))
   end
   put("requests", summary.requests)
   put("duration_us", summary.duration)
   put("bytes", summary.bytes)
   for _, k in ipairs({"connect", "read", "write", "status", "timeout"}) do
      put("errors_" .. k, summary.errors[k])
   end
   for _, p in ipairs({50, 90, 99, 99.9}) do
      put("latency_p" .. p .. "_us", latency:percentile(p))
   end
   put("latency_max_us", latency.max)
   put("latency_mean_us", string.format("%.0f", latency.mean))
   local okc, wrongc, errc, stc, st, okst, kinds = 0, 0, 0, 0, {}, {}, {}
   for _, t in ipairs(threads) do
      okc = okc + (t:get("ok") or 0)
      stc = stc + (t:get("stitched") or 0)
      wrongc = wrongc + (t:get("wrong") or 0)
      errc = errc + (t:get("err") or 0)
      for k, v in pairs(t:get("statuses") or {}) do
         st[k] = (st[k] or 0) + v
      end
      for k, v in pairs(t:get("ok_statuses") or {}) do
         okst[k] = (okst[k] or 0) + v
      end
      for k, v in pairs(t:get("bad_kinds") or {}) do
         kinds[k] = (kinds[k] or 0) + v
      end
   end
   put("ok", okc)
   put("wrong", wrongc)
   put("err", errc)
   put("stitched", stc)
   for k, v in pairs(st) do
      put("status_" .. k, v)
   end
   for k, v in pairs(okst) do
      put("ok_status_" .. k, v)
   end
   for k, v in pairs(kinds) do
      put("bad_kind " .. v, k)
   end
   io.write(table.concat(out, "\n"), "\n")
end
