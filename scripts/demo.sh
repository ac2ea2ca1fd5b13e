#!/usr/bin/env bash
# The demo: a library in a temporary folder, filled and shown. (The two-machine sync demo
# arrives with LAN sync.) Every step is a real p2psync command you can type yourself.
set -euo pipefail
export P2PSYNC_LIBRARY
P2PSYNC_LIBRARY=$(mktemp -d)/library
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step p2psync init --name "Demo library"
einstein=$(p2psync ref add --type journal_article --title "On the Electrodynamics of Moving Bodies" \
  --author "Einstein, Albert" --year 1905 --journal "Annalen der Physik" --field volume=17 \
  --field pages=891-921 --doi 10.1002/andp.19053221004 --field keywords="relativity; electrodynamics")
curie=$(p2psync ref add --type thesis --title "Recherches sur les substances radioactives" \
  --author "Curie, Marie" --year 1903 --field publisher="Faculté des sciences de Paris" --field place=Paris)
who=$(p2psync ref add --type report --title "World report on ageing and health" \
  --author "World Health Organization" --year 2015 --field place=Geneva --field isbn=9789241565042)
printf '\nAdded %s, %s and %s.\n' "$einstein" "$curie" "$who"
step p2psync ref list
step p2psync ref search radioact
step p2psync group create "Reading list"
step p2psync group add "Reading list" "$einstein" "$curie"
step p2psync group list
pdf=$(mktemp -d)/einstein-1905.pdf
printf '%%PDF-1.4\n%% a stand-in for the real paper\n' > "$pdf"
step p2psync attach "$einstein" "$pdf"
step p2psync attachment path "$einstein" einstein-1905.pdf
step p2psync ref edit "$curie" --field notes="Doctoral thesis; Nobel Prize the same year."
step p2psync ref show "$curie"
step p2psync ref rm "$who"
step p2psync trash list
step p2psync trash restore "$who"
step p2psync info
printf '\nThe library is in %s; try `P2PSYNC_LIBRARY=%s p2psync ref list --json`.\n' \
  "$P2PSYNC_LIBRARY" "$P2PSYNC_LIBRARY"
