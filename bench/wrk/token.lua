-- Plain GET of the URL's path, with a bearer token from TOKEN when set.
local token = os.getenv("TOKEN")
if token and #token > 0 then wrk.headers["Authorization"] = "Bearer " .. token end
-- ACCEPT_ENCODING (e.g. "gzip, br") asks for a compressed response.
local enc = os.getenv("ACCEPT_ENCODING")
if enc and #enc > 0 then wrk.headers["Accept-Encoding"] = enc end
