-- The kinds each worker runs, so that the health check can name ready jobs whose kind no
-- live worker serves (they would otherwise wait in silence).
alter table docket.workers add column kinds text[] not null default '{}';
