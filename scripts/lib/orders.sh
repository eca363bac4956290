# The benches' `orders` table, and the backlog the instruction benches
# (tail_instructions.sh, run_instructions.sh) decode: one ROWS-row
# transaction, then SMALL one-row transactions, the same rows every time.

ORDERS_TABLE="CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)"

# write_orders_backlog PSQL-COMMAND...: writes the backlog with the psql
# command given (connected to the source database).
write_orders_backlog() {
  "$@" -c "INSERT INTO orders SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i"
  for i in $(seq 1 "$SMALL"); do
    echo "INSERT INTO orders VALUES ($ROWS + $i, 1, 'small', 1.00, 'one row', now());"
  done | "$@" >/dev/null
}
