-- A multi-tenant shop keyed by (tenant_id, id) throughout: order numbers start again at 1 in
-- each tenant, so an order line reaches its order only by both columns.
CREATE SCHEMA mt;
CREATE TABLE mt.tenant (
    tenant_id integer PRIMARY KEY,
    name      text NOT NULL
);
CREATE TABLE mt.customer (
    tenant_id   integer NOT NULL REFERENCES mt.tenant (tenant_id),
    customer_id bigint NOT NULL UNIQUE,
    email       text NOT NULL,
    full_name   text NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE TABLE mt.orders (
    tenant_id   integer NOT NULL,
    order_id    integer NOT NULL,
    customer_id bigint NOT NULL,
    ship_to     text NOT NULL,
    PRIMARY KEY (tenant_id, order_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES mt.customer (tenant_id, customer_id)
);
CREATE INDEX orders_customer_idx ON mt.orders (tenant_id, customer_id);
CREATE TABLE mt.order_line (
    tenant_id integer NOT NULL,
    order_id  integer NOT NULL,
    line_no   integer NOT NULL,
    item      text NOT NULL,
    PRIMARY KEY (tenant_id, order_id, line_no),
    FOREIGN KEY (tenant_id, order_id) REFERENCES mt.orders (tenant_id, order_id)
);
