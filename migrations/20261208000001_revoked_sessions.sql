-- Operations page sessions signed out before they expire, seen by every `serve`. A row with
-- nonce '*' is "sign out everywhere": every session issued up to `revoked_at` is over. Rows
-- are pruned once `expires_at` (when the session would have expired anyway) has passed.
create table docket.revoked_sessions (
    nonce      text primary key,
    revoked_at timestamptz not null default now(),
    expires_at timestamptz not null
);
create index revoked_sessions_expires_at on docket.revoked_sessions (expires_at);
