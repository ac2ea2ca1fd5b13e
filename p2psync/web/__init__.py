"""The library in a browser: a local web app served by the program itself (`p2psync web`,
`p2psync daemon --web`).

How the parts move: `server.start_web` starts an aiohttp app on 127.0.0.1 beside a Node (node.py)
and writes `web.json` in the library folder, so a later `p2psync web` finds the running app and
only mints a new login link. `auth` is the door: a one-time login token becomes a session cookie;
the Host header, the cookie and (for every change) a CSRF token are checked before any page runs.
`app` builds the application: templates, static files and the routes of the page modules, one per
area (library, reference, files, sync, conflicts, devices, account). Pages run library functions on the
node's LibraryWorker thread, the same functions the command line calls; no rule lives here.
`events` pushes "the library changed" and sync progress to open pages (server-sent events).
"""
