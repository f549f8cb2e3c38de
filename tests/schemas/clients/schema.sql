-- A consultancy's CRM: bigint identity keys, invoices the law says to keep (whose key to the
-- client cannot be null), so the client row stays too, anonymized; a legal-hold flag.
CREATE SCHEMA crm;
CREATE TABLE crm.clients (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id text NOT NULL UNIQUE,
    full_name   text NOT NULL,
    email       text,
    phone       text,
    profile     jsonb,
    erased_at   timestamptz
);
CREATE UNIQUE INDEX clients_email_idx ON crm.clients (lower(email));
CREATE TABLE crm.invoices (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id       bigint NOT NULL REFERENCES crm.clients (id),
    total           numeric(10, 2) NOT NULL,
    billing_name    text NOT NULL,
    billing_address text,
    meta            jsonb NOT NULL DEFAULT '{}',
    issued_on       date NOT NULL
);
CREATE INDEX invoices_client_idx ON crm.invoices (client_id);
CREATE TABLE crm.invoice_lines (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id  bigint NOT NULL REFERENCES crm.invoices (id),
    description text NOT NULL,
    amount      numeric(10, 2) NOT NULL
);
CREATE TABLE crm.notes (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id bigint NOT NULL REFERENCES crm.clients (id),
    body      text NOT NULL
);
CREATE INDEX notes_client_idx ON crm.notes (client_id);
CREATE TABLE crm.holds (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id bigint NOT NULL REFERENCES crm.clients (id),
    active    boolean NOT NULL
);
CREATE INDEX holds_client_idx ON crm.holds (client_id);
