-- The role pgherd's exporter queries as. Run by the exporter on the primary when the role is missing (replicas
-- get it through replication). LOGIN without a password: only the local socket's `trust` line lets it in,
-- every md5/scram line refuses it. pg_monitor is the least privilege that reads every statistics view.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgherd_monitor') THEN
        CREATE ROLE pgherd_monitor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT
            CONNECTION LIMIT 10;
    END IF;
END
$$;
GRANT pg_monitor TO pgherd_monitor;
ALTER ROLE pgherd_monitor SET default_transaction_read_only = on;
ALTER ROLE pgherd_monitor SET search_path = pg_catalog, public, pg_temp;
