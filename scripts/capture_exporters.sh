#!/usr/bin/env bash
# Captures the exporter fixtures of tests/fixtures/prometheus/exposition/ (see its PROVENANCE.md):
# redis_exporter in front of a Redis primary and its replica, mysqld_exporter in front of a
# MariaDB primary and its replica, each replica behind its source at the capture (the Redis
# replica paused for 4 s, so that the primary reports its lag; the MariaDB replica delayed by
# 8 s after 40 inserts). Debian packages: redis-server, prometheus-redis-exporter, mariadb-server,
# prometheus-mysqld-exporter (installed if missing). Everything runs on loopback under a
# temporary directory and stops at the end. OUT (default tests/fixtures/prometheus/exposition)
# receives redis_exporter-{primary,replica}.txt and mysqld_exporter-{primary,replica}.txt.
set -euo pipefail
out=${OUT:-tests/fixtures/prometheus/exposition}
need=()
for p in redis-server prometheus-redis-exporter mariadb-server prometheus-mysqld-exporter; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
w=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    redis-cli -p 16380 shutdown nosave >/dev/null 2>&1 || true
    redis-cli -p 16379 shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$w"
}
trap cleanup EXIT

# Redis: a primary, a replica, some writes and reads (hits and misses on both).
redis-server --port 16379 --bind 127.0.0.1 --daemonize yes --save "" --appendonly no --dir "$w" --logfile "$w/p.log"
redis-server --port 16380 --bind 127.0.0.1 --daemonize yes --save "" --appendonly no --dir "$w" --logfile "$w/r.log" --replicaof 127.0.0.1 16379
sleep 2
for i in $(seq 1 200); do redis-cli -p 16379 set "cart:$i" "item$i" >/dev/null; done
for i in $(seq 1 300); do redis-cli -p 16379 get "cart:$i" >/dev/null; done
for i in $(seq 1 100); do redis-cli -p 16380 get "cart:$i" >/dev/null; done
prometheus-redis-exporter --redis.addr=redis://127.0.0.1:16379 --web.listen-address=127.0.0.1:19121 >"$w/e1.log" 2>&1 &
pids+=($!)
prometheus-redis-exporter --redis.addr=redis://127.0.0.1:16380 --web.listen-address=127.0.0.1:19122 >"$w/e2.log" 2>&1 &
pids+=($!)
sleep 2
replica=$(redis-cli -p 16380 info server | grep process_id | cut -d: -f2 | tr -d '\r')
kill -STOP "$replica"
sleep 4
curl -sf 127.0.0.1:19121/metrics >"$out/redis_exporter-primary.txt"
kill -CONT "$replica"
sleep 1
curl -sf 127.0.0.1:19122/metrics >"$out/redis_exporter-replica.txt"

# MariaDB: a primary with the binary log, a replica of it, an InnoDB table, reads on both.
for n in 1 2; do
    mariadb-install-db --no-defaults --datadir="$w/my$n" --user="$(id -un)" --auth-root-authentication-method=normal >"$w/inst$n.log" 2>&1
done
mariadbd --no-defaults --datadir="$w/my1" --port=13306 --bind-address=127.0.0.1 --socket="$w/my1.sock" --server-id=1 --log-bin=mysql-bin --user="$(id -un)" >"$w/my1.log" 2>&1 &
pids+=($!)
mariadbd --no-defaults --datadir="$w/my2" --port=13307 --bind-address=127.0.0.1 --socket="$w/my2.sock" --server-id=2 --user="$(id -un)" >"$w/my2.log" 2>&1 &
pids+=($!)
sleep 5
sql() { mariadb --no-defaults -S "$w/my$1.sock" -uroot; }
echo "DROP USER IF EXISTS ''@'localhost'; CREATE USER 'repl'@'%' IDENTIFIED BY 'repl'; CREATE USER 'repl'@'localhost' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'localhost'; CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32)) ENGINE=InnoDB;" | sql 1
echo "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=13306, MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE;" | sql 2
sleep 3
for i in $(seq 1 300); do echo "INSERT INTO shop.orders VALUES ($i, 'item$i');"; done | sql 1
for i in $(seq 1 200); do echo "SELECT * FROM shop.orders WHERE id=$i;"; done | sql 1 >/dev/null
for i in $(seq 1 100); do echo "SELECT * FROM shop.orders WHERE id=$i;"; done | sql 2 >/dev/null
DATA_SOURCE_NAME="root@unix($w/my1.sock)/" prometheus-mysqld-exporter --web.listen-address=127.0.0.1:19104 >"$w/m1.log" 2>&1 &
pids+=($!)
DATA_SOURCE_NAME="root@unix($w/my2.sock)/" prometheus-mysqld-exporter --web.listen-address=127.0.0.1:19105 >"$w/m2.log" 2>&1 &
pids+=($!)
echo "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=8; START SLAVE;" | sql 2
sleep 1
for i in $(seq 301 340); do echo "INSERT INTO shop.orders VALUES ($i, 'item$i');"; done | sql 1
sleep 4
curl -sf 127.0.0.1:19105/metrics >"$out/mysqld_exporter-replica.txt"
curl -sf 127.0.0.1:19104/metrics >"$out/mysqld_exporter-primary.txt"
grep -h -E '^(redis_connected_slave_lag_seconds|mysql_slave_status_seconds_behind_master)' "$out"/redis_exporter-primary.txt "$out"/mysqld_exporter-replica.txt
