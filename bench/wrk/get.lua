-- GET <path>/<random id>: ids are read from the file named by IDS_FILE, one per line.
local ids = {}
local prefix = os.getenv("GET_PREFIX") or "/api/v1/cases/"
local token = os.getenv("TOKEN")
for line in io.lines(os.getenv("IDS_FILE")) do
  if #line > 0 then ids[#ids + 1] = line end
end
math.randomseed(os.time())
request = function()
  local headers = {}
  if token and #token > 0 then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", prefix .. ids[math.random(#ids)], headers)
end
