-- Plain GET of the URL's path, with a bearer token from TOKEN when set.
local token = os.getenv("TOKEN")
if token and #token > 0 then wrk.headers["Authorization"] = "Bearer " .. token end
