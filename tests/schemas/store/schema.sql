-- A film rental business shaped like the well-known public sample database, with its messy
-- parts: integer keys; addresses shared by customers, staff and stores; payments partitioned by
-- month whose foreign keys are declared on some partitions only (and one partition with no
-- index at all); payments one customer made on another customer's rental; BEFORE UPDATE
-- triggers that stamp last_update; and no index on some columns a plan follows.
CREATE SCHEMA store;
CREATE TABLE store.address (
    address_id  serial PRIMARY KEY,
    address     text NOT NULL,
    postal_code text,
    phone       text NOT NULL,
    last_update timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE store.store (
    store_id    serial PRIMARY KEY,
    address_id  integer NOT NULL REFERENCES store.address (address_id) ON DELETE RESTRICT,
    last_update timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE store.staff (
    staff_id    serial PRIMARY KEY,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    address_id  integer NOT NULL REFERENCES store.address (address_id) ON DELETE RESTRICT,
    store_id    integer NOT NULL REFERENCES store.store (store_id),
    last_update timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE store.customer (
    customer_id serial PRIMARY KEY,
    store_id    integer NOT NULL REFERENCES store.store (store_id),
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    email       text,
    address_id  integer NOT NULL REFERENCES store.address (address_id) ON DELETE RESTRICT,
    active      boolean NOT NULL DEFAULT true,
    last_update timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customer_email_idx ON store.customer (lower(email));
-- No index on customer.address_id: the sample database has none either.
CREATE TABLE store.rental (
    rental_id    serial PRIMARY KEY,
    rental_date  timestamptz NOT NULL,
    inventory_id integer NOT NULL,
    customer_id  integer NOT NULL REFERENCES store.customer (customer_id) ON DELETE RESTRICT,
    return_date  timestamptz,
    staff_id     integer NOT NULL REFERENCES store.staff (staff_id),
    -- When a kept rental was taken out of the customer's history (plans that keep rentals).
    erased_at    timestamptz,
    last_update  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rental_customer_idx ON store.rental (customer_id);
CREATE TABLE store.payment (
    payment_id   serial,
    customer_id  integer NOT NULL,
    staff_id     integer NOT NULL,
    rental_id    integer,
    amount       numeric(5, 2) NOT NULL,
    payment_date timestamptz NOT NULL,
    PRIMARY KEY (payment_date, payment_id)
) PARTITION BY RANGE (payment_date);
CREATE TABLE store.payment_p2022_01 PARTITION OF store.payment
    FOR VALUES FROM ('2022-01-01') TO ('2022-02-01');
CREATE TABLE store.payment_p2022_02 PARTITION OF store.payment
    FOR VALUES FROM ('2022-02-01') TO ('2022-03-01');
CREATE TABLE store.payment_p2022_03 PARTITION OF store.payment
    FOR VALUES FROM ('2022-03-01') TO ('2022-04-01');
-- Foreign keys on the first two partitions only; the third has none, and no index either.
ALTER TABLE store.payment_p2022_01
    ADD FOREIGN KEY (customer_id) REFERENCES store.customer (customer_id),
    ADD FOREIGN KEY (rental_id) REFERENCES store.rental (rental_id);
ALTER TABLE store.payment_p2022_02
    ADD FOREIGN KEY (customer_id) REFERENCES store.customer (customer_id),
    ADD FOREIGN KEY (rental_id) REFERENCES store.rental (rental_id);
CREATE INDEX payment_p2022_01_customer_idx ON store.payment_p2022_01 (customer_id);
CREATE INDEX payment_p2022_01_rental_idx ON store.payment_p2022_01 (rental_id);
CREATE INDEX payment_p2022_02_customer_idx ON store.payment_p2022_02 (customer_id);
CREATE INDEX payment_p2022_02_rental_idx ON store.payment_p2022_02 (rental_id);

-- BEFORE UPDATE triggers that stamp last_update, as the sample database has.
CREATE FUNCTION store.last_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_update = now();
    RETURN NEW;
END $$;
CREATE TRIGGER last_updated BEFORE UPDATE ON store.address
    FOR EACH ROW EXECUTE FUNCTION store.last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON store.customer
    FOR EACH ROW EXECUTE FUNCTION store.last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON store.rental
    FOR EACH ROW EXECUTE FUNCTION store.last_updated();
