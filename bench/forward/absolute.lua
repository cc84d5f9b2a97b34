-- wrk sends origin-form ("GET / HTTP/1.1") to the host of the URL it is given. A
-- forward proxy needs the absolute form (RFC 9112 3.2.2): aim wrk at the proxy and put
-- the origin's absolute URI in the request line; Host names the origin, as a browser
-- configured with a proxy sends it.
--
--   TARGET=http://127.0.0.1:9301/ wrk -s bench/forward/absolute.lua http://127.0.0.1:PROXY/
local target = os.getenv("TARGET") or error("set TARGET to the origin's absolute URI")
local authority = target:match("^%a[%w+.-]*://([^/]+)") or error("TARGET is not absolute")
wrk.path = target
wrk.headers["Host"] = authority
