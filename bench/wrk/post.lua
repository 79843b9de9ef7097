-- POST /api/v1/cases with a unique case number per request, bearer token from TOKEN.
local token = os.getenv("TOKEN")
local counter = 0
local tag
math.randomseed(os.time() + os.clock() * 1e6)
function init(args)
  tag = string.format("%x%x", math.random(0, 0x7fffffff), os.time())
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"caseNumber":"P-%s-%d","title":"Bench post %d v. Example Corp.","type":"civil","court":"S.D.N.Y.","description":"<p>Posted by the <b>benchmark</b>.</p>"}',
    tag, counter, counter)
  return wrk.format("POST", "/api/v1/cases",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end
