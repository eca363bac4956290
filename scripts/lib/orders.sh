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

# WAIT_FOR_ROW: a procedure for a session on a sink server that waits until
# the orders row `wanted` is visible, looking every `look_every` seconds and
# committing after each look (so it holds no lock and takes a fresh
# snapshot), and returns the epoch it saw it at: the benches' end of a
# consumer's time does not depend on how fast a client can poll, nor costs
# the consumers a trigger.
#   CALL wait_for_row(ID, 0.002)
WAIT_FOR_ROW="CREATE PROCEDURE wait_for_row(wanted bigint, look_every double precision, INOUT seen_at double precision DEFAULT NULL)
LANGUAGE plpgsql AS \$\$
BEGIN
  LOOP
    EXIT WHEN EXISTS (SELECT FROM public.orders WHERE id = wanted);
    COMMIT;
    PERFORM pg_sleep(look_every);
  END LOOP;
  seen_at := extract(epoch FROM clock_timestamp());
END \$\$;"
