# Sourced by run.sh and client.sh, from this directory: the pinned kosoku
# (the Autobahn TestSuite runner) in a local venv, and a release build.
# Sets `root` (the repository) and `venv`.
root=$(cd .. && pwd)
KOSOKU_VERSION=0.1.0
venv=.venv
if [ ! -x "$venv/bin/kosoku" ] || ! "$venv/bin/pip" show kosoku 2>/dev/null | grep -q "^Version: $KOSOKU_VERSION$"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kosoku==$KOSOKU_VERSION"
fi
(cd "$root" && cargo build --release --quiet)
