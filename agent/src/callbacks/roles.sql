-- Roles every Spilo cluster has. Idempotent: runs after bootstrap and again after every promotion.
-- The HUMAN_ROLE placeholder below is replaced by HUMAN_ROLE as a SQL string literal.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'admin') THEN
        ALTER ROLE admin WITH CREATEDB NOLOGIN NOCREATEROLE NOSUPERUSER NOREPLICATION INHERIT;
    ELSE
        CREATE ROLE admin CREATEDB;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'cron_admin') THEN
        ALTER ROLE cron_admin WITH NOCREATEDB NOLOGIN NOCREATEROLE NOSUPERUSER NOREPLICATION INHERIT;
    ELSE
        CREATE ROLE cron_admin;
    END IF;
END
$$;
GRANT cron_admin TO admin;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[{human_role_literal}, 'robot_zmon'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('ALTER ROLE %I WITH NOCREATEDB NOLOGIN NOCREATEROLE NOSUPERUSER NOREPLICATION INHERIT', r);
        ELSE
            EXECUTE format('CREATE ROLE %I', r);
        END IF;
    END LOOP;
END
$$;
