-- wrk against a forward proxy: absolute-form request target, Host of the origin.
wrk.path = "http://backend.test:18080/"
wrk.headers["Host"] = "backend.test:18080"
