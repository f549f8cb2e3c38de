-- An online shop in two schemas: uuid keys, refunds three hops from the account (refunds ->
-- payments -> orders -> accounts), an order state enum, and addresses households share.
CREATE SCHEMA app;
CREATE SCHEMA billing;
CREATE TYPE app.order_state AS ENUM ('open', 'shipped', 'delivered', 'returned');
CREATE TABLE app.addresses (
    id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    line1    text NOT NULL,
    postcode text NOT NULL,
    country  text NOT NULL
);
CREATE TABLE app.accounts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    handle       text NOT NULL UNIQUE,
    display_name text NOT NULL,
    email        text NOT NULL,
    phone        text,
    address_id   uuid REFERENCES app.addresses (id),
    settings     jsonb
);
CREATE UNIQUE INDEX accounts_email_idx ON app.accounts (lower(email));
CREATE INDEX accounts_address_idx ON app.accounts (address_id);
CREATE TABLE app.orders (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL REFERENCES app.accounts (id),
    state      app.order_state NOT NULL,
    ship_to    text,
    placed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_account_idx ON app.orders (account_id);
CREATE TABLE app.sessions (
    id         bigserial PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES app.accounts (id),
    user_agent text
);
CREATE INDEX sessions_account_idx ON app.sessions (account_id);
CREATE TABLE billing.payments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id    uuid NOT NULL REFERENCES app.orders (id),
    card_last4  text NOT NULL,
    card_holder text NOT NULL
);
CREATE INDEX payments_order_idx ON billing.payments (order_id);
CREATE TABLE billing.refunds (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id uuid NOT NULL REFERENCES billing.payments (id),
    note       text
);
CREATE INDEX refunds_payment_idx ON billing.refunds (payment_id);
