-- The compose stack's source: a table to replicate.
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL, amount numeric(12,2) NOT NULL,
                     status text NOT NULL DEFAULT 'new', created_at timestamptz NOT NULL DEFAULT now());
