-- A forum: members who referred each other (a tree of referrals), comments that answer
-- comments (a tree of replies, guests' replies with no member), attachments hanging off
-- comments, and a trigger on the comments.
CREATE SCHEMA forum;
CREATE TABLE forum.member (
    member_id   integer PRIMARY KEY,
    handle      text NOT NULL UNIQUE,
    email       text NOT NULL,
    referred_by integer REFERENCES forum.member (member_id)
);
CREATE INDEX member_referred_by_idx ON forum.member (referred_by);
CREATE TABLE forum.comment (
    comment_id integer PRIMARY KEY,
    member_id  integer REFERENCES forum.member (member_id),
    parent_id  integer REFERENCES forum.comment (comment_id),
    body       text NOT NULL
);
CREATE INDEX comment_member_idx ON forum.comment (member_id);
CREATE INDEX comment_parent_idx ON forum.comment (parent_id);
CREATE TABLE forum.attachment (
    attachment_id serial PRIMARY KEY,
    comment_id    integer NOT NULL REFERENCES forum.comment (comment_id),
    file_name     text NOT NULL
);
CREATE INDEX attachment_comment_idx ON forum.attachment (comment_id);
-- A trigger that keeps the comment's body trimmed (it writes nowhere else).
CREATE FUNCTION forum.trim_body() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.body := btrim(NEW.body);
    RETURN NEW;
END $$;
CREATE TRIGGER comment_trim BEFORE INSERT OR UPDATE ON forum.comment
    FOR EACH ROW EXECUTE FUNCTION forum.trim_body();
