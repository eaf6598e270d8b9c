"""`jobrunner serve`: the HTTP API and the web dashboard, served from the data dir's files.

    config   where to listen, the data dir, the bearer token (and the refusal to serve the network without one)
    guard    the gate every request passes: Host check, auth, CSRF rule, body cap, security headers
    api      the JSON routes: submit (old and native forms), status (old shapes), lists, cancel, retry,
             results, logs, stats
    legacy   the hosted platform's request and response shapes, translated at the edge
    lookup   finding one job and filtered lists, with the query values checked
    pages    the dashboard's HTML pages and live fragments; static/ holds its CSS and script
    charts   success and failure over time, as inline SVG
    app      the Starlette application; server: uvicorn on a socket bound here

The server has no state of its own: it reads status files, the ledger and results with the modules the
CLI uses, submits by writing a spool file as any client does, and never talks to a daemon. The security
choices (token, loopback mode, CSRF) are explained in ``guard``.
"""
