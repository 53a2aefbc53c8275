-- Takes up to `wanted` tokens at once from a bucket (made full on first use): what a
-- rate-limited queue's producer asks for before a claim of that many jobs. Returns how
-- many it got (possibly none) and the level left. Tokens a claim did not use go back with
-- docket.rate_limit_give_back, so a short claim does not waste the rate.
create function docket.rate_limit_take_many(bucket text, per_second double precision,
                                            capacity double precision, wanted integer,
                                            out granted integer, out level double precision)
language plpgsql volatile as $$
begin
    insert into docket.rate_limits as r (name, rate, burst, tokens)
    values (bucket, per_second, capacity, capacity)
    on conflict (name) do nothing;
    select least(capacity,
                 r.tokens + per_second * greatest(0, extract(epoch from clock_timestamp() - r.updated_at)))
      into level
    from docket.rate_limits r where r.name = bucket
    for update;
    granted := greatest(0, least(wanted, floor(level)::integer));
    level := level - granted;
    update docket.rate_limits r
    set rate = per_second, burst = capacity, tokens = level, updated_at = clock_timestamp()
    where r.name = bucket;
end
$$;

create function docket.rate_limit_give_back(bucket text, unused integer)
returns void language sql volatile as $$
    update docket.rate_limits set tokens = least(burst, tokens + unused) where name = bucket;
$$;
