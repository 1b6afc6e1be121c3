#!/usr/bin/env bash
# Wharf quick start on a fresh Debian bookworm machine (as root): installs the dependencies,
# builds, starts wharfd with the demo config (deploy/examples/wharf.yaml: dataset "orders",
# file destination under /tmp/wharf-demo/out), streams sample records with wharfctl, and prints
# the status. wharfd keeps running afterwards; stop it with: kill "$(cat /tmp/wharf-demo/wharfd.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build -j"$(nproc)" --target wharfd wharfctl

DEMO=/tmp/wharf-demo
if [[ -f $DEMO/wharfd.pid ]] && kill -0 "$(cat $DEMO/wharfd.pid)" 2>/dev/null; then
  echo "stopping the previous demo wharfd"
  kill "$(cat $DEMO/wharfd.pid)"
  while kill -0 "$(cat $DEMO/wharfd.pid)" 2>/dev/null; do sleep 0.2; done
fi
mkdir -p $DEMO
build/server/wharfd --config deploy/examples/wharf.yaml --check-config
build/server/wharfd --config deploy/examples/wharf.yaml > $DEMO/wharfd.log 2>&1 &
echo $! > $DEMO/wharfd.pid
for _ in $(seq 1 100); do
  if build/client/wharfctl --server 127.0.0.1:7400 --timeout 1 status > /dev/null 2>&1; then break; fi
  sleep 0.2
done

# 10,000 sample orders: two malformed lines end up in quarantine as PARSE_ERROR, and the orders
# of 495 and more break the contract's rule amount_below_limit (RULE_VIOLATION).
awk 'BEGIN {
  for (i = 1; i <= 10000; i++)
    printf("{\"id\":%d,\"ts\":\"2026-01-01T00:%02d:%02dZ\",\"user\":\"u%d\",\"amount\":%d.%02d,\"tags\":[\"demo\",\"t%d\"],\"ship\":{\"country\":\"NL\",\"zip\":\"%04d\"}}\n",
           i, (i / 60) % 60, i % 60, i % 97, i % 500, i % 100, i % 5, i % 10000);
  print "{\"id\": 10001, \"amount\": "
  print "not json at all"
}' > $DEMO/orders.jsonl

build/client/wharfctl --server 127.0.0.1:7400 produce --dataset orders --key-field user \
  --file $DEMO/orders.jsonl
sleep 1
build/client/wharfctl --server 127.0.0.1:7400 status
echo
build/client/wharfctl --server 127.0.0.1:7400 quarantine list --dataset orders --limit 5
echo
# The contract in force, then a new version that raises the limit (deploy/examples/orders.yaml),
# then the quarantined rule violations replayed through it: a dry run first, then for real.
build/client/wharfctl --server 127.0.0.1:7400 get contract orders --history
build/client/wharfctl --server 127.0.0.1:7400 schema check -f deploy/examples/orders.yaml
build/client/wharfctl --server 127.0.0.1:7400 apply -f deploy/examples/orders.yaml
build/client/wharfctl --server 127.0.0.1:7400 quarantine replay orders --reason RULE_VIOLATION \
  --dry-run
build/client/wharfctl --server 127.0.0.1:7400 quarantine replay orders --reason RULE_VIOLATION
sleep 1
build/client/wharfctl --server 127.0.0.1:7400 status
echo
echo "destination files: $(ls $DEMO/out | wc -l) in $DEMO/out, $(cat $DEMO/out/*.jsonl | wc -l) records"
echo "metrics:"
curl -s 127.0.0.1:9464/metrics | grep -E '^wharf_(ingest_records_total|records_delivered_total|records_quarantined_total)' || true
echo
echo "wharfd is running (pid $(cat $DEMO/wharfd.pid), log $DEMO/wharfd.log)."
echo "stop it with: kill \$(cat $DEMO/wharfd.pid)"
