-- A lending library: members found by a bigint external id, a library card's uuid or a citext
-- email; a loan is open while it has no return date, and a fee over 100 not yet paid also holds
-- the erasure; contact notes kept for the records, their personal data nested in jsonb.
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA lend;
CREATE TABLE lend.member (
    member_id   bigint PRIMARY KEY,
    external_id bigint NOT NULL UNIQUE,
    card        uuid UNIQUE,
    email       citext NOT NULL UNIQUE,
    full_name   text NOT NULL
);
CREATE TABLE lend.loan (
    loan_id     bigserial PRIMARY KEY,
    member_id   bigint NOT NULL REFERENCES lend.member (member_id),
    title       text NOT NULL,
    borrowed_at timestamptz NOT NULL,
    returned_at timestamptz,
    fee         numeric(8, 2) NOT NULL DEFAULT 0,
    fee_paid_at timestamptz
);
CREATE INDEX loan_member_idx ON lend.loan (member_id);
-- Kept for the records: the link to the member cleared, the personal data removed from the
-- nested document, the rest (when, which branch) kept.
CREATE TABLE lend.contact_note (
    note_id   bigserial PRIMARY KEY,
    member_id bigint REFERENCES lend.member (member_id),
    data      jsonb NOT NULL
);
CREATE INDEX contact_note_member_idx ON lend.contact_note (member_id);
