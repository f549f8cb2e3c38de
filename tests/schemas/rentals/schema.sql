-- A rental shop, shaped like well-known sample databases: integer keys, the customer's address
-- in a row the customer references (and a store may share), and a payments table partitioned
-- by date whose foreign keys are declared on each partition.
CREATE SCHEMA shop;
CREATE TABLE shop.address (
    address_id serial PRIMARY KEY,
    street     text NOT NULL,
    city       text NOT NULL,
    phone      text
);
CREATE TABLE shop.customer (
    customer_id serial PRIMARY KEY,
    source_ref  text UNIQUE,
    email       text NOT NULL,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    address_id  integer NOT NULL REFERENCES shop.address (address_id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customer_email_idx ON shop.customer (lower(email));
CREATE INDEX customer_address_idx ON shop.customer (address_id);
CREATE TABLE shop.store (
    store_id   serial PRIMARY KEY,
    address_id integer NOT NULL REFERENCES shop.address (address_id)
);
CREATE INDEX store_address_idx ON shop.store (address_id);
CREATE TABLE shop.rental (
    rental_id   serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES shop.customer (customer_id),
    open        boolean NOT NULL DEFAULT false,
    note        text
);
CREATE INDEX rental_customer_idx ON shop.rental (customer_id);
CREATE TABLE shop.payment (
    payment_id  serial,
    customer_id integer NOT NULL,
    rental_id   integer,
    amount      numeric(6, 2) NOT NULL,
    paid_at     timestamptz NOT NULL,
    card_holder text,
    PRIMARY KEY (payment_id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE shop.payment_2025 PARTITION OF shop.payment
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE shop.payment_2026 PARTITION OF shop.payment
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
ALTER TABLE shop.payment_2025
    ADD FOREIGN KEY (customer_id) REFERENCES shop.customer (customer_id),
    ADD FOREIGN KEY (rental_id) REFERENCES shop.rental (rental_id);
ALTER TABLE shop.payment_2026
    ADD FOREIGN KEY (customer_id) REFERENCES shop.customer (customer_id),
    ADD FOREIGN KEY (rental_id) REFERENCES shop.rental (rental_id);
CREATE INDEX payment_customer_idx ON shop.payment (customer_id);
CREATE INDEX payment_rental_idx ON shop.payment (rental_id);
