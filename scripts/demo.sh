#!/usr/bin/env bash
# The demo: two devices on this machine ("home" and "work", two library folders talking over
# 127.0.0.1) pair by code, sync a library, make a conflict, resolve it, and end in sync.
# Every step is a real p2psync command you can type yourself; mDNS is off (--no-mdns) so nothing
# is announced on this machine's network, and addresses are given instead.
set -euo pipefail

DEMO=$(mktemp -d)
HOME_LIB=$DEMO/home
WORK_LIB=$DEMO/work
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

say() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
run() { printf '\033[1m%s$ %s\033[0m\n' "$1" "${*:2}"; P2PSYNC_LIBRARY=$([ "$1" = home ] && echo "$HOME_LIB" || echo "$WORK_LIB") "${@:2}"; }
json() { python -c "import json,sys; print(json.loads(sys.stdin.readline())$1)"; }

say "1. The home laptop has a library: three references and a PDF."
run home p2psync init --name "Demo library"
einstein=$(P2PSYNC_LIBRARY=$HOME_LIB p2psync ref add --type journal_article \
  --title "On the Electrodynamics of Moving Bodies" --author "Einstein, Albert" --year 1905 \
  --journal "Annalen der Physik" --doi 10.1002/andp.19053221004)
curie=$(P2PSYNC_LIBRARY=$HOME_LIB p2psync ref add --type thesis \
  --title "Recherches sur les substances radioactives" --author "Curie, Marie" --year 1903)
P2PSYNC_LIBRARY=$HOME_LIB p2psync ref add --type report --title "World report on ageing and health" \
  --author "World Health Organization" --year 2015 >/dev/null
printf '%%PDF-1.4\n%% a stand-in for the real paper\n' > "$DEMO/einstein-1905.pdf"
run home p2psync attach "$einstein" "$DEMO/einstein-1905.pdf"
run home p2psync ref list

say "2. Pairing: home offers a one-time code (first line of its output) and waits; work joins with it."
P2PSYNC_LIBRARY=$HOME_LIB p2psync pair --listen 127.0.0.1:0 --no-mdns --json >"$DEMO/offer.out" 2>"$DEMO/offer.err" &
offer_pid=$!
PIDS+=("$offer_pid")
for _ in $(seq 100); do [ -s "$DEMO/offer.out" ] && break; sleep 0.1; done
code=$(json "['code']" <"$DEMO/offer.out")
offer_port=$(json "['listening'].rsplit(':', 1)[1]" <"$DEMO/offer.out")
printf '\033[1mhome$ p2psync pair\033[0m\n%s\n' "$code"
run work p2psync pair "$code" --address "127.0.0.1:$offer_port" --no-mdns
wait "$offer_pid"
sed -n '2,$p' "$DEMO/offer.out" | python -c "import json,sys; o=json.load(sys.stdin); print(f\"home: paired with {o['name']} ({o['device'][:7]}); it received a copy ({o['mode']}).\")"
run work p2psync ref list
run work p2psync peers

say "3. Home runs the daemon: it serves the library and syncs by itself."
P2PSYNC_LIBRARY=$HOME_LIB p2psync daemon --listen 127.0.0.1:0 --no-mdns --json >"$DEMO/daemon.out" 2>"$DEMO/daemon.err" &
home_daemon=$!
PIDS+=("$home_daemon")
for _ in $(seq 100); do [ -s "$DEMO/daemon.out" ] && break; sleep 0.1; done
home_port=$(json "['listening'].rsplit(':', 1)[1]" <"$DEMO/daemon.out")
echo "home's daemon listens on 127.0.0.1:$home_port"

say "4. Work adds a reference and syncs; home has it, and work now has the PDF, byte for byte."
run work p2psync ref add --title "Attention Is All You Need" --author "Vaswani, Ashish" --year 2017 >/dev/null
run work p2psync sync --address "127.0.0.1:$home_port"
run home p2psync ref search attention
run work p2psync attachment list "$einstein"
work_pdf=$(P2PSYNC_LIBRARY=$WORK_LIB p2psync attachment path "$einstein" einstein-1905.pdf)
cmp "$DEMO/einstein-1905.pdf" "$work_pdf" && echo "work's copy is the same file as home's."

say "4b. Home annotates the PDF in place (as a viewer saving an annotation would); work syncs again."
home_pdf=$(P2PSYNC_LIBRARY=$HOME_LIB p2psync attachment path "$einstein" einstein-1905.pdf)
printf '%% an annotation, appended by a PDF viewer\n' >>"$home_pdf"
run home p2psync attachment list "$einstein"
run work p2psync sync --address "127.0.0.1:$home_port"
cmp "$home_pdf" "$work_pdf" && echo "work has the annotated version: only its changed chunk travelled."

say "5. A conflict: both machines change the same title before they sync."
run home p2psync ref edit "$curie" --title "Recherches sur les substances radioactives (thèse)"
run work p2psync ref edit "$curie" --title "Researches on Radioactive Substances"
run work p2psync sync --address "127.0.0.1:$home_port"
run work p2psync conflicts list
run work p2psync conflicts show "$curie"
echo "Both versions are kept on both machines; every machine shows the same provisional title."

say "6. Resolve it on work (keep work's title); the resolution syncs like any change."
run work p2psync conflicts resolve "$curie" --keep local
run work p2psync sync --address "127.0.0.1:$home_port"
run home p2psync conflicts list
run home p2psync ref show "$curie"

say "7. Work runs its daemon too: a change on home reaches work within about a second."
P2PSYNC_LIBRARY=$WORK_LIB p2psync daemon --listen 127.0.0.1:0 --no-mdns --address "127.0.0.1:$home_port" --json \
  >"$DEMO/work-daemon.out" 2>"$DEMO/work-daemon.err" &
work_daemon=$!
PIDS+=("$work_daemon")
for _ in $(seq 100); do [ -s "$DEMO/work-daemon.out" ] && break; sleep 0.1; done
sleep 1
run home p2psync ref edit "$einstein" --field notes="Read again for the seminar."
for _ in $(seq 50); do
  P2PSYNC_LIBRARY=$WORK_LIB p2psync ref show "$einstein" --json | grep -q seminar && break
  sleep 0.1
done
run work p2psync ref show "$einstein"

say "8. The end: both machines show the same library."
P2PSYNC_LIBRARY=$HOME_LIB p2psync ref list --json >"$DEMO/home.json"
P2PSYNC_LIBRARY=$WORK_LIB p2psync ref list --json >"$DEMO/work.json"
if cmp -s "$DEMO/home.json" "$DEMO/work.json"; then
  echo "home and work list the same $(python -c "import json; print(len(json.load(open('$DEMO/home.json'))))") references, field for field."
else
  echo "home and work differ:"; diff "$DEMO/home.json" "$DEMO/work.json"; exit 1
fi
run work p2psync status

say "9. Apart: the daemons stop (the laptops are on different networks now); a relay (online account) on this machine carries their changes."
kill "$home_daemon" "$work_daemon" && wait "$home_daemon" "$work_daemon" 2>/dev/null || true
p2psync relay serve --host 127.0.0.1 --port 0 --data "$DEMO/relay" --json >"$DEMO/relay.out" 2>"$DEMO/relay.err" &
PIDS+=("$!")
for _ in $(seq 100); do [ -s "$DEMO/relay.out" ] && break; sleep 0.1; done
relay_url=$(json "['listening']" <"$DEMO/relay.out")
echo "a relay listens at $relay_url (it will hold only ciphertext)"
printf 'correct horse battery staple\n' | run home p2psync account signup --relay "$relay_url" --email me@example.org --password-stdin
printf 'correct horse battery staple\n' | run work p2psync account login --relay "$relay_url" --email me@example.org --password-stdin
run work p2psync ref add --title "Written on the train" --author "Lovelace, Ada" --year 1843 >/dev/null
run work p2psync sync --relay-only
run home p2psync sync --relay-only
run home p2psync ref search train   # it came through the relay: no LAN sync ran since
run home p2psync account status
if grep -rqa "Written on the train" "$DEMO/relay"; then echo "the relay holds plaintext!"; exit 1; fi
echo "The relay's files hold no title in the clear."

cat <<EOF

The two libraries are in $HOME_LIB and $WORK_LIB; try
  P2PSYNC_LIBRARY=$WORK_LIB p2psync ref list --json
EOF

# Where network namespaces can be made (root on Linux), the same pairing between two "machines"
# on a private bridge, found by mDNS alone.
python "$(dirname "$0")/demo_lan.py"

say "11. The same library in a browser: p2psync web (127.0.0.1 only; the link logs in once)."
P2PSYNC_LIBRARY=$WORK_LIB p2psync web --no-open --json >"$DEMO/web.out" 2>"$DEMO/web.err" &
web_pid=$!
PIDS+=("$web_pid")
for _ in $(seq 100); do [ -s "$DEMO/web.out" ] && break; sleep 0.1; done
first=$(json "['url']" <"$DEMO/web.out")
base=${first%%/login*}
# What a browser does with the link: trade it for a session cookie, then show the library.
count=$(python -c '
import sys, urllib.request, http.cookiejar
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
print(opener.open(sys.argv[1]).read().decode().count("href=\"/ref/"))' "$first")
echo "the web app at $base/ shows the work library ($count references on its first page)"
url=$(P2PSYNC_LIBRARY=$WORK_LIB p2psync web --no-open)   # a second link: the running app, not a new one
if [ "${WEB:-0}" = 1 ]; then
  printf '\nOpen the work library in your browser (Ctrl-C stops it):\n  %s\n' "$url"
  wait "$web_pid"
else
  printf '\nThe web app of the work library (stopped now: the demo leaves nothing running;\n'
  printf '`make demo WEB=1` keeps it open, or run `P2PSYNC_LIBRARY=%s p2psync web`):\n  %s\n' "$WORK_LIB" "$url"
fi
