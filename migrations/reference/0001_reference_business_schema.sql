-- The reference business schema. It belongs to the business, not to the worker: it ships so that
-- the default run, the tests and the benchmark have something real to erase, and the default
-- erasure plan (config/plan.toml) covers it. Deployments with their own schema turn it off
-- (database.reference_schema = false). Column names and types are fixed by the contract.

CREATE TABLE public.customers (
    id          text PRIMARY KEY,
    source_id   text UNIQUE,
    name        text,
    email       text,
    phone       text,
    address     jsonb,
    metadata    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.events (
    id          bigserial PRIMARY KEY,
    customer_id text NOT NULL REFERENCES public.customers (id),
    type        text NOT NULL,
    metadata    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Every step finds a customer's rows by customer_id; without these each erasure scans the table.
CREATE INDEX events_customer_id_idx ON public.events (customer_id);

CREATE TABLE public.customer_events (
    id          bigserial PRIMARY KEY,
    customer_id text NOT NULL REFERENCES public.customers (id),
    type        text NOT NULL,
    data        jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_events_customer_id_idx ON public.customer_events (customer_id);

CREATE TABLE public.daily_events (
    customer_id text NOT NULL REFERENCES public.customers (id),
    day         date NOT NULL,
    type        text NOT NULL,
    count       integer NOT NULL,
    -- The primary key leads with customer_id, so it also serves the erasure's lookup.
    PRIMARY KEY (customer_id, day, type)
);

CREATE TABLE public.segments (
    id   text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE public.segment_members (
    segment_id  text NOT NULL REFERENCES public.segments (id),
    customer_id text NOT NULL REFERENCES public.customers (id),
    PRIMARY KEY (segment_id, customer_id)
);
-- The primary key leads with segment_id; the erasure looks members up by customer.
CREATE INDEX segment_members_customer_id_idx ON public.segment_members (customer_id);

CREATE TABLE public.orders (
    id               text PRIMARY KEY,
    customer_id      text REFERENCES public.customers (id),
    status           text NOT NULL,  -- OPEN | COMPLETED | CANCELED | REFUNDED
    amount           bigint NOT NULL,
    currency         text NOT NULL,
    billing_name     text,
    billing_email    text,
    shipping_address jsonb,
    metadata         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    anonymized_at    timestamptz
);
CREATE INDEX orders_customer_id_idx ON public.orders (customer_id);

CREATE TABLE public.order_events (
    id         bigserial PRIMARY KEY,
    order_id   text NOT NULL REFERENCES public.orders (id),
    type       text NOT NULL,
    data       jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order_id_idx ON public.order_events (order_id);
