#!/usr/bin/env bash
# The test S3 server (tests/infra/s3proxy.py): s3proxy 4.1.0 from Maven Central, run with the
# JDK and Maven that 30-nacos.sh installs. Resolving its jars here (into ~/.m2; the tests
# copy them into the test cache, keyed by the pom's hash) keeps that one-time ~57 MB
# download out of the tests' time; the tests resolve them themselves when this did not run.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt java openjdk-17-jdk-headless
need_apt mvn maven
root=$(cd "$(dirname "$0")/../.." && pwd)
for attempt in 1 2 3; do
  if mvn -B -q -f "$root/tests/infra/s3proxy/pom.xml" dependency:resolve >/dev/null; then
    exit 0
  fi
  echo "60-s3proxy: resolving the s3proxy jars failed (attempt $attempt); retrying" >&2
  sleep $((attempt * 5))
done
echo "60-s3proxy: could not resolve the s3proxy jars from Maven Central" >&2
exit 1
