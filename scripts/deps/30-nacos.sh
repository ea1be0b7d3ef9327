#!/usr/bin/env bash
# The test Nacos server (tests/infra/nacos_server.py): a JDK 17 and Maven. The server's jars
# come from Maven Central into ~/.m2; resolving them here keeps that download out of the
# tests' time (the tests resolve them themselves when this step did not run).
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt java openjdk-17-jdk-headless
need_apt javac openjdk-17-jdk-headless
need_apt mvn maven
root=$(cd "$(dirname "$0")/../.." && pwd)
for attempt in 1 2 3; do
  if mvn -B -q -f "$root/tests/infra/nacos/pom.xml" dependency:resolve >/dev/null; then
    exit 0
  fi
  echo "30-nacos: resolving the Nacos server jars failed (attempt $attempt); retrying" >&2
  sleep $((attempt * 5))
done
echo "30-nacos: could not resolve the Nacos server jars from Maven Central" >&2
exit 1
